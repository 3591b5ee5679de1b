"""tune_lsd/tracking/spool.py: records reach the deliverer in order, exactly as appended, whatever fails
and whoever (a new process, `sync`) picks the spool up again."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tune_lsd.tracking.spool import RECORDS_FILE, Spool, SpoolWriter, spools_under


class Server:
    """A deliverer that records what it received; ``up`` False makes it fail like a dead server;
    ``gate`` (when set) holds each delivery until opened, like a server that hangs."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.calls: list[list[str]] = []
        self.up = True
        self.gate: threading.Event | None = None

    def __call__(self, records: list[dict], state: dict) -> None:
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if not self.up:
            raise ConnectionError("Connection refused\nsecond line")
        self.calls.append([r["op"] for r in records])
        self.received.extend(records)
        state["run_id"] = "run-1"


def metric(step: int) -> dict:
    return {"op": "metrics", "step": step, "values": {"loss": 1.0 / step}}


def test_records_arrive_in_order_and_metrics_are_merged(tmp_path):
    server = Server()
    writer = SpoolWriter(Spool(tmp_path / "trial"), server)
    records = [{"op": "open"}, *[metric(s) for s in range(1, 121)], {"op": "upload", "folder": "x"}, metric(121)]
    for record in records:
        writer.append(record)
    assert writer.close(timeout_s=30) == 0
    assert server.received == records
    # consecutive metric records travel together (at most 50), everything else alone
    assert all(len(call) == 1 for call in server.calls if call[0] != "metrics")
    assert max(len(call) for call in server.calls) <= 50 and len(server.calls) < len(records)
    assert not (tmp_path / "trial").exists()  # delivered: removed


def test_append_never_waits_for_a_hung_server(tmp_path):
    server = Server()
    server.gate = threading.Event()  # every delivery hangs until the gate opens
    writer = SpoolWriter(Spool(tmp_path / "trial"), server)
    started = time.perf_counter()
    for step in range(1, 201):
        writer.append(metric(step))
    assert time.perf_counter() - started < 2.0  # 200 records while the deliverer is stuck
    server.gate.set()
    assert writer.close(timeout_s=30) == 0
    assert [r["step"] for r in server.received] == list(range(1, 201))


def test_an_outage_is_retried_until_the_server_is_back(tmp_path):
    server = Server()
    server.up = False
    writer = SpoolWriter(Spool(tmp_path / "trial"), server, first_wait_s=0.05, max_wait_s=0.2)
    for step in range(1, 11):
        writer.append(metric(step))
    time.sleep(0.5)
    assert writer.failures >= 2 and writer.last_error == "Connection refused"  # one line
    server.up = True
    deadline = time.time() + 10
    while time.time() < deadline and len(server.received) < 10:
        time.sleep(0.05)
    assert [r["step"] for r in server.received] == list(range(1, 11))
    assert writer.close(timeout_s=10) == 0


def test_close_gives_up_on_a_dead_server_and_a_new_spool_delivers_the_rest(tmp_path):
    server = Server()
    writer = SpoolWriter(Spool(tmp_path / "trial", initial_state={"context": {"uri": "x"}}), server)
    writer.append({"op": "open"})
    writer.append(metric(1))
    assert writer.flush(timeout_s=10) == 0
    server.up = False
    for step in range(2, 6):
        writer.append(metric(step))
    started = time.perf_counter()
    assert writer.close(timeout_s=60) == 4  # one failed try, then it stops waiting
    assert time.perf_counter() - started < 5
    # A writer killed mid-line leaves half a record: not a record.
    with open(tmp_path / "trial" / RECORDS_FILE, "a") as handle:
        handle.write('{"op":"metrics","st')
    server.up = True
    (spool,) = spools_under(tmp_path)
    assert spool.state["context"] == {"uri": "x"} and spool.state["run_id"] == "run-1"
    assert spool.appended == 6 and spool.delivered == 2
    assert spool.deliver_pending(server) == 4
    assert [r.get("step") for r in server.received] == [None, 1, 2, 3, 4, 5]  # each once, in order
    assert spool.deliver_pending(server) == 0


def test_delivery_interrupted_mid_group_resumes_after_the_last_delivered_group(tmp_path):
    spool = Spool(tmp_path / "trial")
    for record in [{"op": "open"}, metric(1), metric(2), {"op": "text"}, metric(3)]:
        spool.append(record)
    delivered: list[dict] = []

    def fails_on_text(records, state):
        if records[0]["op"] == "text":
            raise OSError("server went away")
        delivered.extend(records)

    with pytest.raises(OSError):
        spool.deliver_pending(fails_on_text)
    assert [r["op"] for r in delivered] == ["open", "metrics", "metrics"]
    state = json.loads((tmp_path / "trial" / "state.json").read_text())
    assert state["delivered"] == 3  # saved: another process starts after them
    server = Server()
    assert Spool(tmp_path / "trial").deliver_pending(server) == 2
    assert [r["op"] for r in server.received] == ["text", "metrics"]


def test_a_removal_killed_half_way_leaves_no_spool_that_looks_undelivered(tmp_path):
    spool = Spool(tmp_path / "trial_a", initial_state={"context": {"tracking_uri": "x"}})
    spool.append({"op": "metrics", "n": 1})
    spool.remove()
    assert list(tmp_path.iterdir()) == []  # renamed aside, then deleted

    # A process killed while deleting the renamed folder: the next look deletes it, yields nothing.
    leftover = tmp_path / ".removing-trial_b.123.456"
    leftover.mkdir()
    (leftover / RECORDS_FILE).write_text('{"op":"metrics"}\n')
    assert list(spools_under(tmp_path)) == [] and list(tmp_path.iterdir()) == []
