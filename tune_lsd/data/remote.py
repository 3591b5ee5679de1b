"""Datasets in object storage: ``data.root: s3://bucket/CUB_200_2011`` is mirrored to local disk.

The files are fetched once into ``<cache>/downloads/`` (the decode cache's folder, see
cache.py) and kept there: a later search lists the bucket and fetches only what is new or
changed (another size or modification time). Each local copy gets the object's modification
time, so the decode cache sees the same files as long as the bucket does not change.

With the search's shared data (the default) only the driver does this; trials on other nodes
get the decoded images through Ray's object store and never touch the bucket.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeGuard
from urllib.parse import parse_qsl, urlsplit

from tune_lsd.data.cache import cache_root
from tune_lsd.storage import Location, StorageError, is_uri

DOWNLOAD_THREADS = 16  # object stores answer many requests at once; the copies are network-bound
PROGRESS_EVERY_S = 10.0


def is_remote_root(root: str | None) -> TypeGuard[str]:
    """Whether ``data.root`` is a URI in object storage (``s3://...``), not a local folder."""
    return root is not None and is_uri(root)


def mirror_folder(root: str) -> Path:
    """The local folder that mirrors the dataset at ``root`` (a URI; nothing is fetched)."""
    parts = urlsplit(Location(root).uri)
    endpoint = dict(parse_qsl(parts.query)).get("endpoint_override", "default")
    return (
        cache_root() / "downloads" / parts.scheme / endpoint.replace(":", "_") / (parts.netloc + parts.path).strip("/")
    )


def local_root(root: str, log: Callable[[str], None] | None = None) -> str:
    """``root`` itself when it is a local folder; for a URI, its mirror on this machine,
    brought up to date first (only new or changed files are fetched)."""
    if not is_remote_root(root):
        return root
    source = Location(root)
    target = mirror_folder(root)
    log = log or _stderr
    try:
        wanted = _remote_files(source)
        if not wanted:
            raise StorageError(f"data.root {root} holds no files")
        missing = [(name, size, mtime) for name, size, mtime in wanted if not _is_current(target / name, size, mtime)]
        if missing:
            _fetch(source, target, missing, log)
            log(f"data.root {root}: {len(wanted):,} files mirrored in {target} ({len(missing):,} fetched now)")
    except StorageError:
        raise
    except Exception as error:  # pyarrow's OSError with the store's error text
        raise StorageError(f"data.root {root}: {str(error).splitlines()[0]}") from None
    return str(target)


def _remote_files(source: Location) -> list[tuple[str, int, float]]:
    """(path relative to the root, bytes, modification time) of every file under it."""
    import pyarrow.fs

    filesystem, base = source._fs()
    selector = pyarrow.fs.FileSelector(base, recursive=True, allow_not_found=True)
    files = []
    for info in filesystem.get_file_info(selector):
        if info.type == pyarrow.fs.FileType.File:
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            files.append((info.path[len(base.rstrip("/")) + 1 :], info.size, mtime))
    return files


def _is_current(path: Path, size: int, mtime: float) -> bool:
    try:
        status = path.stat()
    except FileNotFoundError:
        return False
    return status.st_size == size and abs(status.st_mtime - mtime) < 1e-3


def _fetch(source: Location, target: Path, files: list[tuple[str, int, float]], log: Callable[[str], None]) -> None:
    filesystem, base = source._fs()
    total = sum(size for _, size, _ in files)
    started = last_report = time.perf_counter()

    def fetch_one(item: tuple[str, int, float]) -> int:
        name, size, mtime = item
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        with filesystem.open_input_stream(f"{base.rstrip('/')}/{name}") as stream, open(partial, "wb") as out:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
        os.utime(partial, (mtime, mtime))
        os.replace(partial, path)  # a fetch that dies half-way leaves no file that looks complete
        return size

    fetched = 0
    with ThreadPoolExecutor(DOWNLOAD_THREADS, thread_name_prefix="fetch") as pool:
        for done, size in enumerate(pool.map(fetch_one, files), start=1):
            fetched += size
            now = time.perf_counter()
            if now - last_report >= PROGRESS_EVERY_S and done < len(files):
                log(
                    f"fetching {source.uri}: {done:,}/{len(files):,} files, {fetched / 1e6:,.0f}/{total / 1e6:,.0f} MB "
                    f"({fetched / 1e6 / (now - started):,.1f} MB/s)"
                )
                last_report = now


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
