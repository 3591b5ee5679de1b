"""Will the data fit? The bytes a dataset takes at its stored side, against the node's memory.

Checked before anything is decoded (the listing gives the image counts), so a dataset too big
for the node stops with one line that says what to lower, instead of dying inside Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tune_lsd.errors import TuneLsdError

RAY_DEFAULT_OBJECT_STORE_SHARE = 0.3  # Ray's object store without --object-store-mb: ~30 % of available memory
# The decoded data may take this share of the node's available memory; the rest is for the
# processes themselves (Python, torch, a model, its batches), which a node swapping is too slow to run.
DATA_MEMORY_SHARE = 0.8


class DataMemoryError(TuneLsdError, RuntimeError):
    """The data does not fit in the node's memory or Ray's object store (message is one line)."""


@dataclass(frozen=True)
class DataFootprint:
    """A dataset's decoded size: images per split at ``size`` x ``size`` x ``channels`` uint8."""

    dataset: str
    size: int
    channels: int
    train_images: int
    test_images: int

    @property
    def bytes(self) -> int:
        return (self.train_images + self.test_images) * self.size * self.size * self.channels

    def describe(self) -> str:
        """The estimate as printed with the data line."""
        per_image = self.size * self.size * self.channels
        return (
            f"{self.dataset} at {self.size} px: {self.train_images:,} train + {self.test_images:,} test images "
            f"= {gigabytes(self.bytes)} decoded (train {gigabytes(self.train_images * per_image)}, "
            f"test {gigabytes(self.test_images * per_image)})"
        )


def gigabytes(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


def available_memory() -> int | None:
    """Bytes of memory available to new work on this node (Linux ``MemAvailable``), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(footprint: DataFootprint, copies: int = 1, available: int | None = None) -> None:
    """Raise :class:`DataMemoryError` when ``copies`` of the data (one per process that decodes
    its own) take more than :data:`DATA_MEMORY_SHARE` of this node's available memory
    (unknown: not checked)."""
    available = available_memory() if available is None else available
    needed = footprint.bytes * copies
    if available is not None and needed > available * DATA_MEMORY_SHARE:
        held = f"; {copies} copies (one per concurrent trial) need {gigabytes(needed)}," if copies > 1 else ","
        raise DataMemoryError(
            f"{footprint.describe()}{held} but this node has {gigabytes(available)} of memory available "
            f"(the data may take {DATA_MEMORY_SHARE:.0%}): lower data.load_size (now {footprint.size})"
            + (" or --max-concurrent, or share the data (leave out --no-shared-data)" if copies > 1 else "")
        )


def check_object_store(footprint: DataFootprint, object_store: int | None) -> None:
    """Raise :class:`DataMemoryError` when the shared data does not fit in Ray's object store
    (the smallest node's: every node holds one copy; None: unknown, not checked)."""
    if object_store is not None and footprint.bytes > object_store:
        raise DataMemoryError(
            f"{footprint.describe()}, but Ray's object store holds {gigabytes(object_store)}: lower data.load_size "
            f"(now {footprint.size}), or raise --object-store-mb (local Ray) / ray start --object-store-memory "
            f"(a cluster), or let each trial decode its own copy (--no-shared-data)"
        )


def default_object_store(object_store_mb: int | None, available: int | None = None) -> int | None:
    """The object store a local Ray will have: ``--object-store-mb``, else Ray's default share."""
    if object_store_mb:
        return object_store_mb * 2**20
    available = available_memory() if available is None else available
    return None if available is None else int(available * RAY_DEFAULT_OBJECT_STORE_SHARE)
