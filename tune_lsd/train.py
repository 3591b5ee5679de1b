"""A complete training run as the ``tune-lsd train`` command does it, writing a run folder.

The run folder holds ``config.yaml`` (every value used), ``metrics.jsonl`` (one line per
epoch), ``best.pt`` (the checkpoint with the best validation Recall@1, or the last epoch
in a final retrain, which has no validation classes) and ``summary.json`` (baselines, best
epoch, and the test metrics, measured once, of the best checkpoint).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tune_lsd.config import Config
from tune_lsd.data.datasets import LabelledImages, data_footprint
from tune_lsd.data.memory import check_memory
from tune_lsd.data.transforms import resize, to_tensor
from tune_lsd.engine import Trainer
from tune_lsd.metrics import retrieval_metrics

SELECT_METRIC = "val/recall@1"


def raw_pixel_metrics(data: LabelledImages, config: Config) -> dict[str, float]:
    """Retrieval on L2-normalised raw pixels at the training size: the floor to beat."""
    pixels = resize(to_tensor(data.images, torch.device("cpu")), config.data.image_size).flatten(1)
    unit_pixels = torch.nn.functional.normalize(pixels * 0.5 + 0.5, dim=1).numpy()  # back to [0, 1] intensities
    return retrieval_metrics(unit_pixels, data.labels, config.eval.ks, nmi=False)


def train_and_test(
    config: Config, run_dir: str | Path, log: Callable[[str], None] = print, baselines: bool = True
) -> dict[str, Any]:
    """Train ``config``, keep the best checkpoint, test it once; returns the summary."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    data = config.data
    footprint = data_footprint(data.dataset, data.root, data.stored_size, log)
    log(f"dataset: {footprint.describe()}")
    check_memory(footprint)
    trainer = Trainer(config)  # data and model first: a bad dataset leaves no run folder behind
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.yaml")
    splits = trainer.splits
    log(
        f"data: {len(splits.train)} train images / {splits.train.num_classes} classes, "
        f"{len(splits.val) if splits.val else 0} val, {len(splits.test)} test; "
        f"{trainer.steps_per_epoch} steps per epoch on {trainer.device}"
    )

    summary: dict[str, Any] = {"run_dir": str(run_dir), "flipped_labels": splits.flipped_labels}
    select_split = "val" if splits.val is not None else "test"
    if baselines:
        summary["untrained"] = {**trainer.evaluate(select_split), **trainer.evaluate("test")}
        summary["raw_pixels"] = {
            f"{s}/{k}": v
            for s in (select_split, "test")
            for k, v in raw_pixel_metrics(getattr(splits, s), config).items()
        }
        log(
            f"untrained {select_split} R@1 {summary['untrained'][f'{select_split}/recall@1']:.4f}, "
            f"raw pixels {summary['raw_pixels'][f'{select_split}/recall@1']:.4f}"
        )

    best_value, best_epoch = -np.inf, 0
    with open(run_dir / "metrics.jsonl", "w") as history:
        for _ in range(config.schedule.epochs):
            metrics = trainer.run_epoch()
            history.write(json.dumps(metrics) + "\n")
            history.flush()
            value = metrics.get(SELECT_METRIC, metrics["epoch"])  # final retrain: the last epoch wins
            if value > best_value:
                best_value, best_epoch = value, metrics["epoch"]
                trainer.save(run_dir / "best.pt")
            log(_epoch_line(metrics, config.schedule.epochs))

    best = Trainer.from_checkpoint(run_dir / "best.pt", splits=splits) if best_epoch != trainer.epoch else trainer
    summary.update(best_epoch=best_epoch, train_s=time.perf_counter() - started, test=best.evaluate("test"))
    if splits.val is not None:
        summary["best_val"] = {k: v for k, v in best.history[-1].items() if k.startswith("val/")}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log(
        f"best epoch {best_epoch}: test R@1 {summary['test']['test/recall@1']:.4f}, "
        f"MAP@R {summary['test']['test/map@r']:.4f}  ->  {run_dir}"
    )
    return summary


def _epoch_line(metrics: dict[str, Any], epochs: int) -> str:
    parts = [
        f"epoch {metrics['epoch']}/{epochs}",
        f"loss {metrics['train/loss']:.4f}",
        f"lsd w {metrics['lsd/weight']:.3g}",
        f"{metrics['train/images_per_s']:.0f} img/s",
    ]
    if "val/recall@1" in metrics:
        parts += [f"val R@1 {metrics['val/recall@1']:.4f}", f"MAP@R {metrics['val/map@r']:.4f}"]
    return "  ".join(parts)
