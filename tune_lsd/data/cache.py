"""Decode once per machine: decoded image arrays kept on local disk and memory-mapped.

An entry is one list of image files decoded at one side ``S``: ``images.npy`` (the
``(N, S, S, 3)`` uint8 array, decoded straight into the file) and ``entry.json`` (what it
holds, for ``tune-lsd cache ls``). Its key hashes ``S``, the geometry's version and every
file's path, size and modification time, so a changed, added or removed image makes a new
entry (the old one stays until ``tune-lsd cache clear``). A finished entry is renamed into
place in one step: a decode that dies half-way leaves no entry that looks complete.

The folder is ``$TUNE_LSD_CACHE``, else ``$XDG_CACHE_HOME/tune_lsd``, else
``~/.cache/tune_lsd``: on each node's own disk, never the shared storage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tune_lsd.data.decoding import MissingImageError, decode_into

GEOMETRY_VERSION = 1  # bump when decoding.py changes what the stored pixels are
DECODED_FOLDER = "decoded"


def cache_root() -> Path:
    """This machine's cache folder (see the module docstring)."""
    if os.environ.get("TUNE_LSD_CACHE"):
        return Path(os.environ["TUNE_LSD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tune_lsd"


@dataclass
class CacheEntry:
    """One decoded file list, as ``tune-lsd cache ls`` shows it."""

    path: Path
    description: str
    images: int
    size: int
    bytes: int
    created: float
    decode_seconds: float


def cached_decode(
    files: Sequence[Path], size: int, description: str, log: Callable[[str], None] | None = None
) -> np.ndarray:
    """The decoded ``(N, size, size, 3)`` images of ``files``: memory-mapped from the cache,
    decoded into it first when it has no entry for exactly these files."""
    entry = cache_root() / DECODED_FOLDER / _key(files, size)
    if not (entry / "entry.json").is_file():
        _decode_entry(entry, files, size, description, log)
    return np.load(entry / "images.npy", mmap_mode="c")  # copy-on-write: writable views, the file never changes


def list_entries() -> list[CacheEntry]:
    """Every complete entry, oldest first."""
    entries = []
    for record in sorted((cache_root() / DECODED_FOLDER).glob("*/entry.json")):
        info = json.loads(record.read_text())
        entries.append(CacheEntry(path=record.parent, **info))
    return sorted(entries, key=lambda entry: entry.created)


def clear() -> tuple[int, int]:
    """Remove every entry (and any half-written one); returns (entries, bytes) removed."""
    folder = cache_root() / DECODED_FOLDER
    removed = [(entry.path, entry.bytes) for entry in list_entries()]
    if folder.is_dir():
        shutil.rmtree(folder)
    return len(removed), sum(size for _, size in removed)


def _key(files: Sequence[Path], size: int) -> str:
    digest = hashlib.sha256(f"v{GEOMETRY_VERSION} {size}\n".encode())
    for path in files:
        try:
            status = path.stat()
        except FileNotFoundError:
            raise MissingImageError(f"image listed by the dataset is missing: {path}") from None
        digest.update(f"{path.resolve()}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _decode_entry(
    entry: Path, files: Sequence[Path], size: int, description: str, log: Callable[[str], None] | None
) -> None:
    partial = entry.with_name(f"{entry.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    try:
        images = np.lib.format.open_memmap(
            partial / "images.npy", mode="w+", dtype=np.uint8, shape=(len(files), size, size, 3)
        )
        seconds = decode_into(images, files, size, description, log=log)
        images.flush()
        del images
        info = {
            "description": description,
            "images": len(files),
            "size": size,
            "bytes": (partial / "images.npy").stat().st_size,
            "created": time.time(),
            "decode_seconds": round(seconds, 2),
        }
        (partial / "entry.json").write_text(json.dumps(info, indent=1))
        try:
            partial.rename(entry)
        except OSError:  # another process finished the same entry first: keep theirs
            shutil.rmtree(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
