"""A spool: tracking records written to disk first, delivered in order by a background thread.

Training never waits on the tracking server. A trial appends each record (its run's params,
an epoch's metrics, a text or a folder to upload) to a JSON-lines file and goes on; a daemon
thread delivers the records in order, retrying with back-off while the server is down. What
is delivered is remembered in ``state.json`` (a record count and byte offset), so a spool left
behind by a process that died or a server that never came back is replayed later, from where
delivery stopped, by ``tune-lsd sync`` or ``--resume``. A fully delivered spool deletes itself.

Layout of one spool folder::

    records.jsonl   one JSON object per line, appended, never rewritten
    state.json      {"delivered": N, "offset": BYTES, ...deliverer state such as the run id}
    files/          files that upload records point to (deleted once delivered)

Delivery must be idempotent (a record may be delivered twice after a crash between delivering
it and saving the count): MLflow's SQL stores ignore a metric point logged twice.

This module knows nothing about MLflow: ``deliver(records, state)`` comes from the caller.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tune_lsd.errors import first_line

RECORDS_FILE = "records.jsonl"
STATE_FILE = "state.json"
REMOVING_PREFIX = ".removing-"  # a delivered spool on its way out
FILES_DIR = "files"
# deliver(records, state) sends records in order, raises on failure; may store keys in state.
Deliver = Callable[[list[dict[str, Any]], dict[str, Any]], None]


class Spool:
    """One folder of records, appended by one writer process at a time."""

    def __init__(self, folder: Path, initial_state: dict[str, Any] | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.state = self._read_state()
        if initial_state:
            self.state = {**initial_state, **self.state}
            self.save_state()
        self.appended = self.state["delivered"] + len(self.pending(limit=10**9))

    @property
    def files(self) -> Path:
        """Where upload records keep their files until delivered."""
        return self.folder / FILES_DIR

    def _read_state(self) -> dict[str, Any]:
        path = self.folder / STATE_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {"delivered": 0, "offset": 0}

    @property
    def delivered(self) -> int:
        return self.state["delivered"]

    def save_state(self) -> None:
        temporary = self.folder / f".{STATE_FILE}.{os.getpid()}.{threading.get_ident()}"
        temporary.write_text(json.dumps(self.state))
        os.replace(temporary, self.folder / STATE_FILE)  # atomic: a crash leaves the old or the new

    def append(self, record: dict[str, Any]) -> None:
        """Add a record (a line, flushed to the OS: it outlives this process)."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock, open(self.folder / RECORDS_FILE, "a") as handle:
            handle.write(line)
            self.appended += 1

    def pending(self, limit: int = 500) -> list[tuple[dict[str, Any], int]]:
        """Up to ``limit`` undelivered records, each with its length in bytes. A last line
        without its newline (its writer died mid-write) is not a record."""
        records: list[tuple[dict[str, Any], int]] = []
        try:
            with open(self.folder / RECORDS_FILE, "rb") as handle:
                handle.seek(self.state["offset"])
                for line in handle:
                    if not line.endswith(b"\n") or len(records) >= limit:
                        break
                    records.append((json.loads(line), len(line)))
        except FileNotFoundError:
            pass
        return records

    def mark_delivered(self, count: int, offset: int) -> None:
        self.state["delivered"] += count
        self.state["offset"] = offset
        self.save_state()

    def deliver_pending(self, deliver: Deliver) -> int:
        """Deliver every pending record now, in order; returns how many. Consecutive records of
        one ``op`` in MERGED_OPS go to ``deliver`` together (one request for many epochs), any
        other record alone. Raises on failure, having saved the count of what was delivered."""
        total = 0
        while True:
            pending = self.pending()
            if not pending:
                return total
            for group in _groups(pending):
                deliver([record for record, _ in group], self.state)
                self.mark_delivered(len(group), self.state["offset"] + sum(size for _, size in group))
                total += len(group)

    def remove(self) -> None:
        """Delete the folder (everything in it was delivered). It is renamed aside first: a
        process killed while deleting would otherwise leave records without their state, a
        spool that looks undelivered and names no server."""
        removing = self.folder.with_name(f"{REMOVING_PREFIX}{self.folder.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            os.rename(self.folder, removing)
        except FileNotFoundError:  # removed already
            return
        shutil.rmtree(removing, ignore_errors=True)


MERGED_OPS = ("metrics",)
MAX_MERGED = 50  # records per merged delivery


def _groups(pending: list[tuple[dict[str, Any], int]]) -> Iterator[list[tuple[dict[str, Any], int]]]:
    group: list[tuple[dict[str, Any], int]] = []
    for record, size in pending:
        op = record["op"]
        if group and (op != group[0][0]["op"] or op not in MERGED_OPS or len(group) >= MAX_MERGED):
            yield group
            group = []
        group.append((record, size))
    if group:
        yield group


def spools_under(root: Path) -> Iterator[Spool]:
    """Every spool folder directly under ``root`` (sorted by name); what a killed removal left
    is deleted on the way."""
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.name.startswith(REMOVING_PREFIX):
                shutil.rmtree(folder, ignore_errors=True)
            elif (folder / RECORDS_FILE).is_file():
                yield Spool(folder)


class SpoolWriter:
    """A spool and the daemon thread that delivers it.

    ``append`` returns at once. A failed delivery is retried with back-off (``first_wait_s``
    doubling up to ``max_wait_s``) for as long as the writer lives. ``flush`` and ``close`` wait
    for what was appended before them to be delivered, but give up after one failed attempt
    (the server is down): the records stay on disk for ``tune-lsd sync``.
    """

    def __init__(self, spool: Spool, deliver: Deliver, first_wait_s: float = 0.5, max_wait_s: float = 30.0) -> None:
        self.spool = spool
        self.deliver = deliver
        self.first_wait_s, self.max_wait_s = first_wait_s, max_wait_s
        self.last_error: str | None = None
        self.failures = 0  # consecutive failed deliveries
        self._attempts = 0
        self._attempt_done = threading.Condition()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"spool-{spool.folder.name}", daemon=True)
        self._thread.start()

    def append(self, record: dict[str, Any]) -> None:
        self.spool.append(record)
        self._wake.set()

    @property
    def closed(self) -> bool:
        return self._stopping

    def _run(self) -> None:
        wait = self.first_wait_s
        while True:
            self._wake.wait(timeout=None if self.failures == 0 else wait)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.spool.deliver_pending(self.deliver)
                self.failures, self.last_error, wait = 0, None, self.first_wait_s
            except Exception as error:  # the server or the network failed: try again later
                self.failures += 1
                self.last_error = first_line(error)
                wait = min(wait * 2, self.max_wait_s) if self.failures > 1 else self.first_wait_s
            with self._attempt_done:
                self._attempts += 1
                self._attempt_done.notify_all()

    def flush(self, timeout_s: float = 300.0) -> int:
        """Wait until what was appended so far is delivered, a delivery fails, or ``timeout_s``
        passes; returns the number of records not delivered."""
        target = self.spool.appended
        if self._stopping:
            return target - self.spool.delivered
        with self._attempt_done:
            started = self._attempts
            self._wake.set()
            self._attempt_done.wait_for(
                lambda: self.spool.delivered >= target or (self._attempts > started and self.failures > 0),
                timeout=timeout_s,
            )
        return self.spool.appended - self.spool.delivered

    def close(self, timeout_s: float = 300.0) -> int:
        """Flush, stop the thread; returns the records left (kept on disk). An empty spool is removed."""
        if self._stopping:
            return self.spool.appended - self.spool.delivered
        left = self.flush(timeout_s)
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=1.0)
        if left == 0:
            self.spool.remove()
        return left
