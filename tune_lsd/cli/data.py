"""``tune-lsd cache``: this machine's decoded datasets."""

from __future__ import annotations

import argparse
from datetime import datetime

from tune_lsd.cli.command import Command


class Cache(Command):
    name = "cache"
    help = "show (ls) or remove (clear) this machine's decoded datasets"
    epilog = """Folder datasets (CUB, Cars, SOP, In-Shop, your own) are decoded once per machine at their
data.load_size and kept in $TUNE_LSD_CACHE (default ~/.cache/tune_lsd); the next search or
train memory-maps them. An image added, changed or removed makes a new entry: clear the old ones.

examples:
  tune-lsd cache ls
  tune-lsd cache clear
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=["ls", "clear"])

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.data import cache
        from tune_lsd.data.memory import gigabytes

        if args.action == "clear":
            count, size = cache.clear()
            print(f"removed {count} decoded datasets ({gigabytes(size)}) from {cache.cache_root()}")
            return 0
        entries = cache.list_entries()
        print(
            f"{len(entries)} decoded datasets in {cache.cache_root()}, "
            f"{gigabytes(sum(e.bytes for e in entries))} in all"
        )
        width = max((len(entry.description) for entry in entries), default=0)
        for entry in entries:
            created = datetime.fromtimestamp(entry.created).strftime("%Y-%m-%d %H:%M")
            print(
                f"  {entry.description:<{width}}  {entry.images:>9,} images at {entry.size:>4} px  "
                f"{gigabytes(entry.bytes):>9}  decoded {created} in {entry.decode_seconds:,.0f} s  {entry.path.name}"
            )
        return 0
