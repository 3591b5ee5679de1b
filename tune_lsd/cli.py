"""``tune-lsd``: the command line. It parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from datetime import datetime
from pathlib import Path

from tune_lsd.config import Config, ConfigError

EPILOG_TRAIN = """examples:
  tune-lsd train --config glyphs_demo
  tune-lsd train --config my.yaml --set lsd.temperature=0.1 --set schedule.epochs=20
  tune-lsd train --config best.yaml --set data.final=true   # retrain on all training classes, test once
"""
EPILOG_EVALUATE = """examples:
  tune-lsd evaluate --checkpoint runs/train/demo/best.pt
  tune-lsd evaluate --checkpoint best.pt --split val
"""


def resolve_config_path(name: str) -> Path:
    """A YAML path, or the name of a config shipped in ``search_spaces/configs/``."""
    path = Path(name)
    if path.is_file():
        return path
    from search_spaces import CONFIG_DIR

    shipped = CONFIG_DIR / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    available = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config {name!r} is neither a file nor a shipped config ({available})")


def _train(args: argparse.Namespace) -> int:
    from tune_lsd.train import train_and_test

    config = Config.load(resolve_config_path(args.config), args.set) if args.config else Config().with_overrides(args.set)
    run_dir = Path(args.output) if args.output else Path("runs/train") / (args.name or datetime.now().strftime("%Y%m%d-%H%M%S"))
    summary = train_and_test(config, run_dir, baselines=not args.no_baselines)
    print(json.dumps({"test": summary["test"], "best_epoch": summary["best_epoch"], "run_dir": str(run_dir)}, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from tune_lsd.engine import Trainer

    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise ConfigError(f"checkpoint not found: {checkpoint}")
    trainer = Trainer.from_checkpoint(checkpoint, overrides={"runtime.progress": False})
    print(json.dumps(trainer.evaluate(args.split), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tune-lsd", description="Tune deep metric learning with Listwise Self-Distillation.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one configuration and test it once",
                                epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", help="YAML file or shipped config name (default: built-in defaults)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, repeatable")
    train.add_argument("--output", "-o", help="run folder (default: runs/train/<name or time>)")
    train.add_argument("--name", help="run name under runs/train/")
    train.add_argument("--no-baselines", action="store_true", help="skip the untrained and raw-pixel baselines")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="retrieval metrics of a checkpoint",
                                   epilog=EPILOG_EVALUATE, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("--checkpoint", required=True, help="a best.pt written by `tune-lsd train`")
    evaluate.add_argument("--split", choices=["test", "val"], default="test")
    evaluate.set_defaults(handler=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug:
        return args.handler(args)
    warnings.simplefilter("default")
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as error:  # our errors are one line; ask --debug for more
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
