"""``tune-lsd compare``: does space A beat space B on my data?"""

from __future__ import annotations

import argparse

from tune_lsd.cli.command import Command
from tune_lsd.cli.options import add_model_options, model_from_args
from tune_lsd.config import ConfigError


class Compare(Command):
    name = "compare"
    help = "search two spaces with paired seeds: their test difference, intervals and a verdict"
    epilog = """Does space A beat space B on my data? Runs --search-seeds searches per space (the same
trials, searcher and --set on both sides), retrains each search's best config on all training
classes with --seeds seeds (the same seeds on both sides), tests once, and reports the paired
differences of test Recall@1 and MAP@R with bootstrap and Student-t 95 % intervals, over
retrain seeds and over search seeds. The last line is the verdict. Results: MLflow experiment
NAME (a parent run, one run per retrain), runs/reports/NAME/compare.html (a forest plot).

examples:
  tune-lsd compare --name lsd-vs-base --spaces lsd,baseline --num-samples 8 --search-seeds 3 --seeds 3
  tune-lsd compare --name noisy --spaces lsd,baseline --set data.label_noise=0.3
  tune-lsd compare --resume lsd-vs-base        # continue where it stopped
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from tune_lsd.compare.settings import CompareSettings

        parser.add_argument("--resume", metavar="NAME", help="continue the comparison NAME where it stopped")
        add_model_options(parser, CompareSettings)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.compare import CompareSettings, resume_compare, run_compare

        if args.resume:
            resume_compare(args.resume, runs_dir=args.runs_dir)
            return 0
        if not args.name:
            raise ConfigError("tune-lsd compare needs --name NAME (or --resume NAME)")
        run_compare(model_from_args(CompareSettings, args))
        return 0
