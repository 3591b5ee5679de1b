"""``tune-lsd search | finalize | prune | sync``: a search and what comes after it."""

from __future__ import annotations

import argparse
from datetime import datetime

from tune_lsd.cli.command import Command
from tune_lsd.cli.options import add_model_options, model_from_args
from tune_lsd.cli.stores import add_no_cache_option, add_search_location_options, add_set_option, cache_overrides
from tune_lsd.config import ConfigError

INTERRUPTED = 130  # the exit status of a search stopped by Ctrl-C (as a shell reports SIGINT)


class Search(Command):
    name = "search"
    help = "run a hyperparameter search on Ray Tune, tracked in MLflow"
    epilog = """examples:
  tune-lsd search --space lsd --name demo --num-samples 8 --max-concurrent 2
  tune-lsd search --space baseline --searcher random --scheduler fifo --name base
  tune-lsd search --space lsd_pbt --searcher random --scheduler pbt --name pbt
  tune-lsd search --space my_space.yaml --set data.dataset=cub --set data.root=/data/CUB_200_2011
  tune-lsd search --resume demo          # continue a search whose driver died
  tune-lsd search --extend demo --num-samples 8   # 8 more trials, TPE informed by the first ones
  tune-lsd search --space lsd --name big --address HEAD:6379 --storage s3://bucket/tune-lsd
      (a cluster without a shared folder; AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment)
  tune-lsd search --resume big --storage s3://bucket/tune-lsd   # from any machine, any folder
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from tune_lsd.search.settings import SearchSettings

        parser.add_argument("--resume", metavar="NAME", help="continue the search NAME whose driver died")
        parser.add_argument(
            "--extend",
            metavar="NAME",
            help="run --num-samples more trials of the completed search "
            "NAME, its searcher started from every earlier result",
        )
        add_model_options(parser, SearchSettings, exclude={"earlier_trials"})
        parser.set_defaults(name=None)  # a search named after the time it started
        add_no_cache_option(parser)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.search import SearchSettings, resume_search, run_search

        if args.resume:
            summary = resume_search(args.resume, runs_dir=args.runs_dir, storage=args.storage)
        elif args.extend:
            from tune_lsd.search.extend import extend_search

            summary = extend_search(args.extend, args.num_samples, runs_dir=args.runs_dir, storage=args.storage)
        else:
            settings = model_from_args(
                SearchSettings,
                args,
                name=args.name or datetime.now().strftime("search-%Y%m%d-%H%M%S"),
                overrides=[*args.overrides, *cache_overrides(args)],
            )
            if settings.storage_location.is_remote:
                settings.storage_location.check_writable()  # one line, before anything else, when it cannot be used
            if settings.settings_location.exists():
                raise ConfigError(
                    f"a search named {settings.name!r} already exists in {settings.storage_location.uri}: "
                    f"pick another --name or continue it with --resume {settings.name}"
                )
            summary = run_search(settings)
        return INTERRUPTED if summary["state"] == "interrupted" else 0


class Finalize(Command):
    name = "finalize"
    help = "retrain the best config on all training classes, test it once and register it as the champion"
    epilog = """The search's best trial was trained on its training classes minus the validation ones (and,
with ASHA, maybe stopped early). This exports its config (runs/final/NAME/best.yaml), retrains
it on all training classes with the full schedule, tests it once on the test classes, logs the
run NAME-final to the search's MLflow experiment and registers its model as a new version of
NAME-best with the alias champion (the best trial keeps @search-best). Its last lines compare
the final model's test Recall@1 and MAP@R with the untrained network's and raw pixels'.

examples:
  tune-lsd finalize demo
  tune-lsd finalize demo --set schedule.epochs=10
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="the search name")
        add_set_option(parser, "override of the exported config, e.g. schedule.epochs=10")
        add_search_location_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.search import finalize_search

        finalize_search(args.name, runs_dir=args.runs_dir, storage=args.storage, overrides=args.set)
        return 0


class Prune(Command):
    name = "prune"
    help = "delete a search's finished trials' Ray checkpoints, and the models beyond its best trials'"
    epilog = """Deletes runs/ray/NAME/*/checkpoint_* of every trial when the search has completed,
otherwise of the trials MLflow records as completed or stopped early (the others keep theirs
for --resume). In MLflow, the models of the ended trials beyond the best N go (their metrics
and configs stay); the best N trials keep theirs.

examples:
  tune-lsd prune demo
  tune-lsd prune demo --keep-models 3
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="the search name")
        parser.add_argument(
            "--keep-models",
            type=int,
            metavar="N",
            help="keep the models of the N best trials in MLflow (0: all; default: the search's --keep-models)",
        )
        add_search_location_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.search import prune_search

        if args.keep_models is not None and args.keep_models < 0:
            raise ConfigError(f"--keep-models {args.keep_models}: must be 0 (keep all) or more")
        prune_search(args.name, runs_dir=args.runs_dir, storage=args.storage, keep_models=args.keep_models)
        return 0


class Sync(Command):
    name = "sync"
    help = "deliver to MLflow what a search kept while its tracking server was down"
    epilog = """Trials record into spools under runs/searches/NAME/spool/ and a background thread
delivers them: a tracking server that is down never slows training. What a server that stayed
down did not receive is kept there; this delivers it (in order, nothing twice) once the server
is back, and registers the best model if the search could not. `--resume` does it too.

examples:
  tune-lsd sync demo
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="the search name")
        add_search_location_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from tune_lsd.search import sync_search

        sync_search(args.name, runs_dir=args.runs_dir, storage=args.storage)
        return 0
