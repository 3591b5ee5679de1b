"""Image files -> one ``(N, S, S, 3)`` uint8 array, in the DML literature's geometry.

Each image's shorter side is resized to ``S`` and its centre ``S x S`` square kept: what the
literature's test transform (Resize(S) of the shorter side + CenterCrop) sees, and the square
the training crops are then drawn from. Nothing is squashed: a 3:2 car stays a 3:2 car inside
its central square.

Decoding runs on every core the process may use (PIL releases the GIL while it decodes and
resizes, so threads scale), and JPEGs are decoded at a reduced DCT scale ("draft" mode) while
that scale still leaves at least ``DRAFT_MARGIN`` times ``S`` pixels on the shorter side, so
the final antialiased resize still sees enough pixels (benchmarks/decode_cache.py measures the
difference to a full decode).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from tune_lsd.errors import TuneLsdError

DRAFT_MARGIN = 2  # JPEG draft keeps >= 2 x S pixels on the shorter side before the resize
PROGRESS_EVERY_S = 10.0


class MissingImageError(TuneLsdError, FileNotFoundError):
    """An image the dataset's listing names is not on disk."""


class UnreadableImageError(TuneLsdError, ValueError):
    """An image file that PIL cannot decode (not an image, truncated)."""


def usable_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def decode_image(path: Path, size: int, draft: bool = True) -> np.ndarray:
    """One image as ``(size, size, 3)`` uint8: shorter side -> ``size``, centre square kept."""
    if not path.is_file():
        raise MissingImageError(f"image listed by the dataset is missing: {path}")
    try:
        return _decode(path, size, draft)
    except (OSError, ValueError) as error:  # PIL: not an image, truncated, unknown format
        raise UnreadableImageError(f"image cannot be decoded: {path} ({str(error).splitlines()[0][:200]})") from None


def _decode(path: Path, size: int, draft: bool) -> np.ndarray:
    with Image.open(path) as image:
        if draft and image.format == "JPEG":
            image.draft("RGB", (DRAFT_MARGIN * size, DRAFT_MARGIN * size))
        rgb = image.convert("RGB")
        return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR, box=centre_square(*rgb.size)))


def centre_square(width: int, height: int) -> tuple[float, float, float, float]:
    """The (left, top, right, bottom) box of the centred square whose side is the shorter side."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def decode_into(
    out: np.ndarray,
    files: Sequence[Path],
    size: int,
    description: str,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> float:
    """Decode ``files`` into ``out[i]`` (an array or a memory map) on ``workers`` threads
    (default: every usable core); prints progress every ~10 s; returns the seconds taken."""
    log = log or _stderr
    workers = workers or usable_cores()
    started = last_report = time.perf_counter()

    def decode_one(index: int) -> None:
        out[index] = decode_image(files[index], size)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for done, _ in enumerate(pool.map(decode_one, range(len(files))), start=1):
            now = time.perf_counter()
            if now - last_report >= PROGRESS_EVERY_S and done < len(files):
                rate = done / (now - started)
                log(
                    f"{description}: decoded {done:,}/{len(files):,} images ({rate:,.0f}/s, "
                    f"about {(len(files) - done) / rate:,.0f} s left)"
                )
                last_report = now
    return time.perf_counter() - started


def decode_all(
    files: Sequence[Path], size: int, description: str = "images", log: Callable[[str], None] | None = None
) -> np.ndarray:
    """Decode ``files`` into a new in-memory ``(N, size, size, 3)`` uint8 array."""
    out = np.empty((len(files), size, size, 3), np.uint8)
    decode_into(out, files, size, description, log=log)
    return out


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
