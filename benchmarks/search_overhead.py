"""Search overhead: N epochs of one configuration through `tune-lsd search` (Ray, MLflow, a
checkpoint every epoch) against the same N epochs through the plain engine loop.

Both run as fresh processes (imports included), with 2 CPU threads, on the glyph search
base config with LSD; the search is one trial (a single-value space), FIFO, random searcher.
Target: <= 1.10x.

    python benchmarks/search_overhead.py [--epochs 6]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACE = "base: glyphs_search\nparams:\n  optim.lr: {type: choice, values: [0.001]}\n"


def plain_loop(epochs: int, extra: list[str]) -> None:
    from search_spaces.loader import load_space
    from tune_lsd.config import parse_override
    from tune_lsd.engine import Trainer

    config = (
        load_space(str(Path(extra[0])))
        .base_config()
        .with_overrides({"schedule.epochs": epochs, "runtime.threads": 2, **dict(parse_override(o) for o in extra[1:])})
    )
    trainer = Trainer(config)
    for _ in range(epochs):
        trainer.run_epoch()


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "RAY_AUTH_MODE": "disabled"}
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--set", action="append", default=[], help="extra overrides, e.g. for a tiny run")
    parser.add_argument("--plain", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain_loop(args.epochs, [args.plain, *args.set])
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "one.yaml").write_text(SPACE)
        sets = [item for override in args.set for item in ("--set", override)]
        plain = timed(
            [sys.executable, __file__, "--plain", str(folder / "one.yaml"), "--epochs", str(args.epochs), *sets], folder
        )
        search = timed(
            [
                sys.executable,
                "-m",
                "tune_lsd.cli",
                "search",
                "--space",
                "one.yaml",
                "--name",
                "overhead",
                "--searcher",
                "random",
                "--scheduler",
                "fifo",
                "--num-samples",
                "1",
                "--max-concurrent",
                "1",
                "--cpus-per-trial",
                "2",
                "--set",
                f"schedule.epochs={args.epochs}",
                *sets,
            ],
            folder,
        )
    print("| path | wall (s) |")
    print("|---|---|")
    print(f"| plain engine loop ({args.epochs} epochs, fresh process) | {plain:.1f} |")
    print(f"| tune-lsd search, 1 trial (Ray + MLflow + checkpoints) | {search:.1f} |")
    print(f"ratio search/plain: {search / plain:.2f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
