"""``tune-lsd ui | server | cluster``: the processes a team runs beside its searches."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tune_lsd.cli.command import Command
from tune_lsd.cli.stores import add_store_options, existing_store
from tune_lsd.config import ConfigError

RUNS_DIR_HELP = "the runs folder (default: runs)"


def check_port_free(host: str, port: int) -> None:
    """One line instead of the server's traceback when something already listens on the port."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(f"cannot serve on {host}:{port} ({error.strerror}): pick another with --port") from None


def serve(command: list[str], environment: dict[str, str] | None = None) -> int:
    """Run an MLflow server in the foreground (``environment``: added to this process's);
    Ctrl-C or SIGTERM ends it with every process it started."""
    from tune_lsd.cluster import end_process_tree

    server = subprocess.Popen(
        command, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(environment or {})}
    )

    def stop(*_: object) -> None:
        end_process_tree(server.pid, grace_s=10)

    signal.signal(signal.SIGTERM, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        stop()
        return 130


class UI(Command):
    name = "ui"
    help = "serve the MLflow UI of the search results on 127.0.0.1"
    epilog = """examples:
  tune-lsd ui                                   # the searches in runs/mlflow.db, at http://127.0.0.1:5000
  tune-lsd ui --tracking-uri http://head:5000 --port 5001
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_store_options(parser)
        parser.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
        parser.add_argument("--port", type=int, default=5000, help="(default: 5000)")

    def run(self, args: argparse.Namespace) -> int:
        uri = existing_store(args)
        check_port_free(args.host, args.port)
        print(f"MLflow UI of {uri} at http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
        return serve(
            [
                sys.executable,
                "-m",
                "mlflow",
                "ui",
                "--backend-store-uri",
                uri,
                "--host",
                args.host,
                "--port",
                str(args.port),
                "--workers",
                "1",
            ]
        )


class Server(Command):
    name = "server"
    help = "run a shared MLflow tracking server for a cluster's trials"
    epilog = """examples:
  tune-lsd server --port 5000                                   # SQLite store in runs/
  tune-lsd server --backend-store-uri postgresql://mlflow@db/mlflow --host 0.0.0.0
  tune-lsd search --space lsd --tracking-uri http://127.0.0.1:5000
  MLFLOW_TRACKING_USERNAME=team MLFLOW_TRACKING_PASSWORD=... tune-lsd server --auth --host 0.0.0.0
      (every client, trials included, sends the same two variables or ~/.mlflow/credentials)
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... tune-lsd server --artifacts-destination s3://bucket/mlflow
      (artifacts in object storage; only the server needs the S3 credentials)
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--backend-store-uri", help="sqlite:///... (default: runs/mlflow-server.db) or postgresql://..."
        )
        parser.add_argument(
            "--artifacts-destination",
            help="where artifacts are stored: a folder (default: "
            "runs/server-artifacts) or s3://BUCKET/PREFIX (as --storage of search; the server needs "
            "the S3 credentials, trials and the UI do not)",
        )
        parser.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 to serve other machines")
        parser.add_argument("--port", type=int, default=5000, help="(default: 5000)")
        parser.add_argument("--allowed-hosts", help="with a non-local --host: comma-separated Host headers to accept")
        parser.add_argument(
            "--auth",
            action="store_true",
            help="require a user and password (MLflow basic auth); the admin's credentials come from "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or ~/.mlflow/credentials",
        )
        parser.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.tracking import artifact_store, auth_server_environment, server_command

        check_port_free(args.host, args.port)
        runs_dir = Path(args.runs_dir).resolve()
        artifacts, artifact_environment = artifact_store(
            args.artifacts_destination or str(runs_dir / "server-artifacts")
        )
        environment = {
            **artifact_environment,
            **(auth_server_environment(runs_dir / "server-auth") if args.auth else {}),
        }
        runs_dir.mkdir(parents=True, exist_ok=True)
        backend = args.backend_store_uri or f"sqlite:///{runs_dir / 'mlflow-server.db'}"
        command = server_command(backend, artifacts, args.host, args.port, auth=args.auth)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            command += ["--allowed-hosts", args.allowed_hosts or "*"]
            if not args.auth:
                print(
                    f"warning: serving on {args.host} without --auth: anyone who reaches port {args.port} can read, "
                    "change and delete every search",
                    flush=True,
                )
        print(
            f"MLflow tracking server on http://{args.host}:{args.port} (store {backend}, artifacts {artifacts}"
            f"{', basic authentication: users in ' + str(runs_dir / 'server-auth') if args.auth else ''}); "
            f"use --tracking-uri http://{args.host}:{args.port}",
            flush=True,
        )
        return serve(command, environment)


class Cluster(Command):
    name = "cluster"
    help = "start (up) or end (down) a Ray cluster of this machine's nodes, by pid"
    epilog = """examples:
  tune-lsd cluster up --workers 2 --cpus-per-node 1     # head + 2 workers on 127.0.0.1
  tune-lsd search --space lsd --address 127.0.0.1:6390 --num-samples 8 --max-concurrent 3
  tune-lsd cluster down
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=["up", "down"])
        parser.add_argument("--workers", type=int, default=1, help="worker nodes besides the head (default: 1)")
        parser.add_argument("--port", type=int, default=6390, help="the head's GCS port (default: 6390)")
        parser.add_argument("--cpus-per-node", type=float, default=1, help="(default: 1)")
        parser.add_argument("--gpus-per-node", type=float, help="default: what Ray detects")
        parser.add_argument("--object-store-mb", type=int, default=300, help="(default: 300)")
        parser.add_argument(
            "--auth",
            choices=["disabled", "token"],
            default="disabled",
            help="Ray 2.60 token authentication; every node and driver must agree",
        )
        parser.add_argument("--runs-dir", default="runs", help=RUNS_DIR_HELP)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.cluster import cluster_down, cluster_up

        runs_dir = Path(args.runs_dir).resolve()
        if args.action == "down":
            print(f"ended {cluster_down(runs_dir)} Ray nodes")
            return 0
        address = cluster_up(
            runs_dir,
            port=args.port,
            workers=args.workers,
            cpus_per_node=args.cpus_per_node,
            gpus_per_node=args.gpus_per_node,
            object_store_mb=args.object_store_mb,
            auth=args.auth,
        )
        print(
            f"Ray cluster up at {address}: head + {args.workers} workers "
            f"(pids in {runs_dir / 'cluster' / 'nodes.json'})"
        )
        print(f"search on it:   tune-lsd search --address {address} --runs-dir {args.runs_dir} ...")
        print(f"more machines:  RAY_AUTH_MODE={args.auth} ray start --address=<this host>:{args.port} --block")
        print(f"end it:         tune-lsd cluster down --runs-dir {args.runs_dir}")
        return 0
