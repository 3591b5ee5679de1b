"""LSD step cost: a training step with the LSD teacher (ema, epoch) against the base-loss step,
same batches and model, through the engine (tune_lsd.engine.Trainer.train_epoch).

The teacher adds one no-grad forward pass of the same network to a forward + backward, so
~1.33x is the floor; the target is <= 1.40x. Rounds alternate the three settings so that
machine noise hits all of them alike; the median epoch time per setting is reported.

    python benchmarks/lsd_step_cost.py [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics

from tune_lsd.config import Config
from tune_lsd.engine import Trainer


def trainer(teacher: str | None, steps: int) -> Trainer:
    overrides = {
        "data.max_classes": 100,
        "schedule.steps_per_epoch": steps,
        "schedule.epochs": 1000,
        "runtime.progress": False,
        "eval.nmi": False,
        "lsd.ramp": "constant",
        "lsd.ema_momentum": 0.9,
    }
    overrides.update({"lsd.enabled": False} if teacher is None else {"lsd.teacher": teacher})
    built = Trainer(Config().with_overrides(overrides))
    built.train_epoch()  # warm-up; gives the epoch teacher its first snapshot
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="batches (128 glyphs, 32 px, resnet10t) per timed epoch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = {
        "base loss": trainer(None, args.steps),
        "LSD ema": trainer("ema", args.steps),
        "LSD epoch": trainer("epoch", args.steps),
    }
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, built in settings.items():
            times[name].append(built.train_epoch()["train/epoch_s"] / args.steps)
    base = statistics.median(times["base loss"])
    print("| setting | ms per step (median) | ratio to base |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {1000 * statistics.median(values):.0f} | {statistics.median(values) / base:.2f}x |")
    ema, epoch = (statistics.median(times[k]) / base for k in ("LSD ema", "LSD epoch"))
    print(f"ratio LSD/base step time: ema {ema:.2f}x, epoch {epoch:.2f}x (target <= 1.40x)")


if __name__ == "__main__":
    main()
