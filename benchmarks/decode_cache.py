"""Decode once per machine: the first load of a folder dataset (decoding every JPEG into the
cache) against the second (listing, cache key, memory map, then reading every pixel).

The tree is synthetic, in Stanford Online Products' format: ``--images`` JPEGs of
``--width`` x ``--height`` (smooth random colour fields with noise, ~40 KB each), 5 per class,
half the classes train. Also measured on a slice of the same files, each on every usable core:
the old loader's way (squash to a square, 4 threads, no draft), threads (what tune_lsd uses)
and a process pool writing into a memory map (the alternative). And how close JPEG draft
decoding stays to a full decode, on scikit-learn's two real photos enlarged 3x.

    python benchmarks/decode_cache.py [--images 20000] [--size 256] [--tree DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sized
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

PER_CLASS = 5


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth random colour field with noise: compresses like a photo (~40 KB at 640 x 480)."""
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(field).astype(np.int16) + rng.integers(-12, 13, (height, width, 3), np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_tree(root: Path, count: int, width: int, height: int, seed: int = 0) -> None:
    """An SOP-format tree: Ebay_train.txt / Ebay_test.txt and the JPEGs they name."""
    if (root / "Ebay_test.txt").is_file():
        return
    classes = max(2, count // PER_CLASS)

    def write(index: int) -> str:
        relative = f"class_{index % classes:05d}/{index}.JPG"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        photo_like(np.random.default_rng([seed, index]), width, height).save(root / relative, quality=90)
        return f"{index + 1} {index % classes + 1} 1 {relative}"

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        rows = list(pool.map(write, range(count)))
    train = [row for row in rows if int(row.split()[1]) <= classes // 2]
    test = [row for row in rows if int(row.split()[1]) > classes // 2]
    for part, lines in (("train", train), ("test", test)):
        (root / f"Ebay_{part}.txt").write_text("image_id class_id super_class_id path\n" + "\n".join(lines) + "\n")


def squashed(path: Path, size: int) -> np.ndarray:
    """The loader before the decode cache: every image squashed to a square, no draft."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def decode_chunk(args: tuple[str, int, int, list[Path]]) -> None:
    """A process pool's task: decode a chunk of files into their rows of a shared .npy map."""
    from tune_lsd.data.decoding import decode_image

    out_path, start, size, files = args
    out = np.load(out_path, mmap_mode="r+")
    for offset, path in enumerate(files):
        out[start + offset] = decode_image(path, size)
    out.flush()


def rate(files: Sized, seconds: float) -> str:
    from tune_lsd.data.decoding import usable_cores

    return f"{len(files) / seconds:,.0f} images/s, {len(files) / seconds / usable_cores():,.0f} per core"


def compare_pools(files: list[Path], size: int, folder: Path) -> None:
    from tune_lsd.data.decoding import decode_all, usable_cores

    cores = usable_cores()
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda path: squashed(path, size), files))
    print(f"  old loader (squash, 4 threads, no draft): {rate(files, time.perf_counter() - started)}")
    started = time.perf_counter()
    decode_all(files, size, log=lambda line: None)
    print(f"  threads x {cores} (tune_lsd):               {rate(files, time.perf_counter() - started)}")
    out_path = folder / "processes.npy"
    np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(len(files), size, size, 3)).flush()
    chunk = -(-len(files) // (4 * cores))
    started = time.perf_counter()
    with ProcessPoolExecutor(cores) as pool:
        list(
            pool.map(
                decode_chunk, [(str(out_path), i, size, files[i : i + chunk]) for i in range(0, len(files), chunk)]
            )
        )
    print(
        f"  processes x {cores} into a memory map:       {rate(files, time.perf_counter() - started)} "
        "(pool start included)"
    )


def draft_error(size: int, folder: Path) -> None:
    """Mean / largest absolute difference (grey levels) and PSNR of draft vs full decoding."""
    from sklearn.datasets import load_sample_images

    from tune_lsd.data import decoding

    for index, photo in enumerate(load_sample_images().images):
        path = folder / f"photo{index}.jpg"
        Image.fromarray(photo).resize((photo.shape[1] * 3, photo.shape[0] * 3), Image.Resampling.BICUBIC).save(
            path, quality=95
        )
        full = decoding.decode_image(path, size, draft=False).astype(float)
        with Image.open(path) as image:  # for scale: the same full decode with another good filter
            lanczos = np.asarray(
                image.convert("RGB").resize(
                    (size, size), Image.Resampling.LANCZOS, box=decoding.centre_square(*image.size)
                )
            ).astype(float)
        print(
            f"  photo {index}: full decode, Lanczos instead of bilinear: mean {np.abs(lanczos - full).mean():.2f}, "
            f"max {np.abs(lanczos - full).max():.0f} grey levels, PSNR {_psnr(lanczos, full):.1f} dB"
        )
        for margin in (1, 2):
            decoding.DRAFT_MARGIN = margin
            drafted = decoding.decode_image(path, size).astype(float)
            error = np.abs(drafted - full)
            with Image.open(path) as image:
                image.draft("RGB", (margin * size, margin * size))
                scale = round(photo.shape[0] * 3 / image.size[1])
            print(
                f"  photo {index} ({photo.shape[1] * 3}x{photo.shape[0] * 3}) at {size} px, draft margin {margin} "
                f"(DCT scale 1/{scale}): mean {error.mean():.2f}, max {error.max():.0f} grey levels, "
                f"PSNR {_psnr(drafted, full):.1f} dB"
            )
    decoding.DRAFT_MARGIN = 2


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--size", type=int, default=256, help="data.load_size")
    parser.add_argument("--slice", type=int, default=2000, help="images for the pool comparison")
    parser.add_argument("--tree", help="keep the synthetic tree here (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="decode_cache_") as scratch_name:
        scratch = Path(scratch_name)
        os.environ["TUNE_LSD_CACHE"] = str(scratch / "cache")  # an empty cache of its own
        from tune_lsd.data.datasets import load_dataset
        from tune_lsd.data.decoding import usable_cores

        root = Path(args.tree) if args.tree else scratch / "sop"
        started = time.perf_counter()
        write_tree(root, args.images, args.width, args.height)
        print(
            f"tree: {args.images:,} JPEGs of {args.width} x {args.height} in {root} "
            f"({sum(p.stat().st_size for p in root.rglob('*.JPG')) / 1e6:,.0f} MB, "
            f"{time.perf_counter() - started:.0f} s)"
        )

        started = time.perf_counter()
        first = load_dataset("sop", str(root), args.size)
        first_s = time.perf_counter() - started
        count = len(first.train) + len(first.test)
        print(
            f"first load (decode into the cache, {usable_cores()} cores): {first_s:.2f} s, "
            f"{rate(range(count), first_s)}"
        )

        started = time.perf_counter()
        second = load_dataset("sop", str(root), args.size)
        mapped_s = time.perf_counter() - started
        checksum = sum(
            int(part.images[i : i + 1000].sum(dtype=np.uint64))
            for part in (second.train, second.test)
            for i in range(0, len(part), 1000)
        )
        second_s = time.perf_counter() - started
        print(
            f"second load: listing + cache key + memory map {mapped_s:.2f} s; reading every pixel too {second_s:.2f} s "
            f"({checksum % 1000})"
        )

        files = sorted(root.rglob("*.JPG"))[: args.slice]
        print(f"decoding {len(files):,} of the files at {args.size} px:")
        compare_pools(files, args.size, scratch)
        print("JPEG draft against a full decode:")
        draft_error(min(args.size, 224), scratch)
        print(f"ratio first/second load: {first_s / second_s:.1f}")


if __name__ == "__main__":
    main()
