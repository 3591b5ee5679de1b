"""``tune-lsd train`` and ``tune-lsd evaluate``: one configuration, trained and tested."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from tune_lsd.cli.command import Command
from tune_lsd.cli.stores import add_no_cache_option, add_set_option, cache_overrides
from tune_lsd.config import Config


def resolve_config_path(name: str) -> Path:
    """A YAML path, or the name of a config shipped in ``search_spaces/configs/``."""
    from search_spaces import CONFIG_DIR
    from search_spaces.loader import resolve_yaml

    return resolve_yaml(name, CONFIG_DIR, "config")


class Train(Command):
    name = "train"
    help = "train one configuration and test it once"
    epilog = """examples:
  tune-lsd train --config glyphs_demo
  tune-lsd train --config my.yaml --set lsd.temperature=0.1 --set schedule.epochs=20
  tune-lsd train --config best.yaml --set data.final=true   # retrain on all training classes, test once
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", help="YAML file or shipped config name (default: built-in defaults)")
        add_set_option(parser, "dotted override of the config (docs/config.md)")
        parser.add_argument("--output", "-o", help="run folder (default: runs/train/<name or time>)")
        parser.add_argument("--name", help="run name under runs/train/")
        parser.add_argument("--no-baselines", action="store_true", help="skip the untrained and raw-pixel baselines")
        add_no_cache_option(parser)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.train import train_and_test

        overrides = [*args.set, *cache_overrides(args)]
        config = (
            Config.load(resolve_config_path(args.config), overrides)
            if args.config
            else Config().with_overrides(overrides)
        )
        run_dir = (
            Path(args.output)
            if args.output
            else Path("runs/train") / (args.name or datetime.now().strftime("%Y%m%d-%H%M%S"))
        )
        summary = train_and_test(config, run_dir, baselines=not args.no_baselines)
        print(
            json.dumps(
                {"test": summary["test"], "best_epoch": summary["best_epoch"], "run_dir": str(run_dir)}, indent=2
            )
        )
        return 0


class Evaluate(Command):
    name = "evaluate"
    help = "retrieval metrics of a checkpoint"
    epilog = """examples:
  tune-lsd evaluate --checkpoint runs/train/demo/best.pt
  tune-lsd evaluate --checkpoint best.pt --split val
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--checkpoint", required=True, help="a best.pt written by `tune-lsd train`")
        parser.add_argument("--split", choices=["test", "val"], default="test")

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.engine import CheckpointError, Trainer

        checkpoint = Path(args.checkpoint)
        if not checkpoint.is_file():
            raise CheckpointError(f"checkpoint not found: {checkpoint}")
        trainer = Trainer.from_checkpoint(checkpoint, overrides={"runtime.progress": False})
        print(json.dumps(trainer.evaluate(args.split), indent=2))
        return 0
