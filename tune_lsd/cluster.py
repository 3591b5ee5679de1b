"""Start and end a Ray cluster by pid: ``tune-lsd cluster up`` / ``tune-lsd cluster down``.

Every node is a ``ray start --block`` process started in its own session; its pid goes to
``<runs>/cluster/nodes.json``, and ``down`` ends exactly those processes and everything they
started. Nothing here ends Ray processes by name (``ray stop`` would end every Ray on the
machine, other users' included).

On one machine ``up`` starts a head and N workers on 127.0.0.1 (what the tests do). On real
machines, start the head here and run the printed ``ray start --address`` line on each
worker machine (with tune_lsd installed there and the same RAY_AUTH_MODE / token).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tune_lsd.errors import TuneLsdError


class ClusterError(TuneLsdError, RuntimeError):
    """A cluster could not be started or found (message is one line)."""


def _ray_executable() -> str:
    return str(Path(sys.executable).with_name("ray"))


def node_command(
    head_address: str | None, port: int, cpus: float, gpus: float | None, object_store_bytes: int | None
) -> list[str]:
    """The ``ray start --block`` command line of a head (no address) or a worker node."""
    command = [_ray_executable(), "start", "--block", f"--num-cpus={cpus:g}", "--disable-usage-stats"]
    command += (
        [f"--address={head_address}"]
        if head_address
        else ["--head", f"--port={port}", "--include-dashboard=false", "--node-ip-address=127.0.0.1"]
    )
    if gpus is not None:
        command.append(f"--num-gpus={gpus:g}")
    if object_store_bytes:
        command.append(f"--object-store-memory={object_store_bytes}")
    return command


def cluster_up(
    runs_dir: Path,
    port: int = 6390,
    workers: int = 1,
    cpus_per_node: float = 1,
    gpus_per_node: float | None = None,
    object_store_mb: int = 300,
    auth: str = "disabled",
    timeout_s: float = 120,
) -> str:
    """Start a head and ``workers`` worker nodes on this machine; return the cluster address."""
    state_file = runs_dir / "cluster" / "nodes.json"
    if state_file.exists():
        raise ClusterError(
            f"a cluster started from {runs_dir} is already up ({state_file}); `tune-lsd cluster down` first"
        )
    if _port_open(port):
        raise ClusterError(f"port {port} is in use: pick another with --port")
    state_file.parent.mkdir(parents=True, exist_ok=True)
    # WARNING: Ray's runtime-env agent would log the trials' credentials (AWS, MLflow) at INFO.
    env = {"RAY_LOGGER_LEVEL": "warning", **os.environ, "RAY_AUTH_MODE": auth}
    address = f"127.0.0.1:{port}"
    store = object_store_mb * 2**20
    nodes: list[dict] = []
    try:
        nodes.append(
            _start_node("head", node_command(None, port, cpus_per_node, gpus_per_node, store), env, state_file.parent)
        )
        _write_state(state_file, address, auth, nodes)
        _wait_for(lambda: _port_open(port), timeout_s, f"the head node did not open port {port}", nodes)
        for index in range(workers):
            command = node_command(address, port, cpus_per_node, gpus_per_node, store)
            nodes.append(_start_node(f"worker{index + 1}", command, env, state_file.parent))
            _write_state(state_file, address, auth, nodes)
        _wait_for(
            lambda: _alive_nodes(address, env) >= workers + 1,
            timeout_s,
            f"not all {workers + 1} nodes joined the cluster",
            nodes,
        )
    except BaseException:
        cluster_down(runs_dir)
        raise
    return address


def cluster_down(runs_dir: Path) -> int:
    """End every node recorded in ``nodes.json`` (SIGTERM, then SIGKILL of what is left)."""
    state_file = runs_dir / "cluster" / "nodes.json"
    if not state_file.exists():
        raise ClusterError(f"no cluster recorded in {state_file}")
    nodes = json.loads(state_file.read_text())["nodes"]
    for node in reversed(nodes):  # workers first, the head last
        end_process_tree(node["pid"], grace_s=5)  # (some of Ray's processes ignore SIGTERM)
    state_file.unlink()
    return len(nodes)


def cluster_address(runs_dir: Path) -> str | None:
    state_file = runs_dir / "cluster" / "nodes.json"
    return json.loads(state_file.read_text())["address"] if state_file.exists() else None


def end_process_tree(pid: int, grace_s: float = 15) -> None:
    """SIGTERM ``pid`` (Ray's --block ends its node's processes), then SIGKILL any survivor."""
    tree = [pid, *descendants(pid)]
    _signal_all(tree, signal.SIGTERM)
    deadline = time.time() + grace_s
    while time.time() < deadline and any(_alive(p) for p in tree):
        time.sleep(0.5)
    _signal_all([p for p in tree if _alive(p)], signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """All processes below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


# --- helpers ---------------------------------------------------------------------------------


def _start_node(role: str, command: list[str], env: dict, folder: Path) -> dict:
    log = open(folder / f"{role}.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return {"role": role, "pid": process.pid, "command": command, "log": str(folder / f"{role}.log")}


def _write_state(state_file: Path, address: str, auth: str, nodes: list[dict]) -> None:
    state_file.write_text(json.dumps({"address": address, "auth": auth, "nodes": nodes}, indent=2))


def _wait_for(condition, timeout_s: float, what: str, nodes: list[dict]) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return
        dead = [n for n in nodes if not _alive(n["pid"])]
        if dead:
            raise ClusterError(f"{dead[0]['role']} node exited; see {dead[0]['log']}")
        time.sleep(1)
    raise ClusterError(f"{what} within {timeout_s:.0f} s; see the logs in {Path(nodes[0]['log']).parent}")


def _alive_nodes(address: str, env: dict) -> int:
    """Number of alive nodes, asked in a separate process (a driver here would pin this one)."""
    script = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    )
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
        return int(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return 0


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
