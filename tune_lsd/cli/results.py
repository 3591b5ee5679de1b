"""``tune-lsd ls | report | export``: what the searches found, read from MLflow."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from tune_lsd.cli.command import Command
from tune_lsd.cli.options import add_model_options
from tune_lsd.cli.stores import add_store_options, existing_store


def add_metric_options(parser: argparse.ArgumentParser, mode: bool = True) -> None:
    """``--metric`` (and ``--mode``): which trial is best, as a search defines it."""
    from tune_lsd.search.settings import SearchSettings

    add_model_options(parser, SearchSettings, ["metric", "mode"] if mode else ["metric"])


class Export(Command):
    name = "export"
    help = "write the best trial's config as YAML for the final retrain"
    epilog = """examples:
  tune-lsd export --experiment demo -o best.yaml && tune-lsd train --config best.yaml
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--experiment", required=True, help="the search name")
        parser.add_argument("--output", "-o", default="best.yaml", help="the YAML file to write (default: best.yaml)")
        add_metric_options(parser)
        add_store_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.export import export_best_config

        exported = export_best_config(existing_store(args), args.experiment, Path(args.output), args.metric, args.mode)
        print(f"exported trial {exported['trial']} ({args.metric} {exported['value']:.4f}) to {exported['output']}")
        print(f"next: tune-lsd train --config {exported['output']}")
        return 0


class Report(Command):
    name = "report"
    help = "write an HTML report (trials, curves, importance, best config) of a search"
    epilog = """examples:
  tune-lsd report demo                          # -> runs/reports/demo/report.html (+ PNGs)
  tune-lsd report demo -o /tmp/demo-report --no-mlflow
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="the search name")
        parser.add_argument("--output", "-o", help="folder for report.html and its PNGs (default: runs/reports/NAME)")
        parser.add_argument("--no-mlflow", action="store_true", help="do not log the report to the search's parent run")
        add_metric_options(parser)
        add_store_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.report import write_report

        uri = existing_store(args)
        out = Path(args.output or Path(args.runs_dir) / "reports" / args.name).resolve()
        print(f"report of search {args.name!r}: reading trials from {uri}", flush=True)
        report = write_report(uri, args.name, out, args.metric, args.mode, log_to_mlflow=not args.no_mlflow)
        print(
            f"wrote {report}" + ("" if args.no_mlflow else " (also logged to the search's MLflow parent run, report/)")
        )
        print(f"open it: {report.as_uri()}")
        return 0


class List(Command):
    name = "ls"
    help = "list the searches with state, trial count and best metric"
    epilog = """examples:
  tune-lsd ls
  tune-lsd ls --tracking-uri http://head:5000
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_metric_options(parser, mode=False)
        add_store_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.report import list_searches

        uri = existing_store(args)
        rows = list_searches(uri, args.metric)
        if not rows:
            print(f"no searches in {uri}")
            return 0
        width = max(len(r["name"]) for r in rows)
        print(f"{'search':<{width}}  {'state':<22} {'trials':>6} {'errored':>7}  {'best ' + args.metric:>18}  started")
        for row in rows:
            best = "-" if row["best"] is None else f"{row['best']:.4f}"
            started = datetime.fromtimestamp(row["started_ms"] / 1000).strftime("%Y-%m-%d %H:%M")
            print(
                f"{row['name']:<{width}}  {row['state']:<22} {row['trials']:>6} {row['errored']:>7}  "
                f"{best:>18}  {started}"
            )
        return 0
