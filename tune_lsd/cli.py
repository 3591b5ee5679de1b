"""``tune-lsd``: the command line. It parses arguments and calls the library, nothing more.

One file for every command: each is an argument parser, its examples and a call into the
library, so the whole command line reads in one place (longer than the library's modules).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import threading
import warnings
from datetime import datetime
from pathlib import Path

from tune_lsd.config import Config, ConfigError

EPILOG_TRAIN = """examples:
  tune-lsd train --config glyphs_demo
  tune-lsd train --config my.yaml --set lsd.temperature=0.1 --set schedule.epochs=20
  tune-lsd train --config best.yaml --set data.final=true   # retrain on all training classes, test once
"""
EPILOG_SEARCH = """examples:
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
EPILOG_EXPORT = """examples:
  tune-lsd export --experiment demo -o best.yaml && tune-lsd train --config best.yaml
"""
EPILOG_UI = """examples:
  tune-lsd ui                                   # the searches in runs/mlflow.db, at http://127.0.0.1:5000
  tune-lsd ui --tracking-uri http://head:5000 --port 5001
"""
EPILOG_REPORT = """examples:
  tune-lsd report demo                          # -> runs/reports/demo/report.html (+ PNGs)
  tune-lsd report demo -o /tmp/demo-report --no-mlflow
"""
EPILOG_PRUNE = """Deletes runs/ray/NAME/*/checkpoint_* of every trial when the search has completed,
otherwise of the trials MLflow records as completed or stopped early (the others keep theirs
for --resume). Each trial's best model stays in MLflow.

examples:
  tune-lsd prune demo
"""
EPILOG_SYNC = """Trials record into spools under runs/searches/NAME/spool/ and a background thread
delivers them: a tracking server that is down never slows training. What a server that stayed
down did not receive is kept there; this delivers it (in order, nothing twice) once the server
is back, and registers the best model if the search could not. `--resume` does it too.

examples:
  tune-lsd sync demo
"""
EPILOG_FINALIZE = """The search's best trial was trained on its training classes minus the validation ones (and,
with ASHA, maybe stopped early). This exports its config (runs/final/NAME/best.yaml), retrains
it on all training classes with the full schedule, tests it once on the test classes, logs the
run NAME-final to the search's MLflow experiment and registers its model as a new version of
NAME-best with the alias champion (the best trial keeps @search-best). Its last lines compare
the final model's test Recall@1 and MAP@R with the untrained network's and raw pixels'.

examples:
  tune-lsd finalize demo
  tune-lsd finalize demo --set schedule.epochs=10
"""
EPILOG_CACHE = """Folder datasets (CUB, Cars, SOP, In-Shop, your own) are decoded once per machine at their
data.load_size and kept in $TUNE_LSD_CACHE (default ~/.cache/tune_lsd); the next search or
train memory-maps them. An image added, changed or removed makes a new entry: clear the old ones.

examples:
  tune-lsd cache ls
  tune-lsd cache clear
"""
NO_CACHE_HELP = "decode the images again and keep them only in memory (the same as --set data.cache=false)"
EPILOG_COMPARE = """Does space A beat space B on my data? Runs --search-seeds searches per space (the same
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
EPILOG_LS = """examples:
  tune-lsd ls
  tune-lsd ls --tracking-uri http://head:5000
"""
EPILOG_SERVER = """examples:
  tune-lsd server --port 5000                                   # SQLite store in runs/
  tune-lsd server --backend-store-uri postgresql://mlflow@db/mlflow --host 0.0.0.0
  tune-lsd search --space lsd --tracking-uri http://127.0.0.1:5000
  MLFLOW_TRACKING_USERNAME=team MLFLOW_TRACKING_PASSWORD=... tune-lsd server --auth --host 0.0.0.0
      (every client, trials included, sends the same two variables or ~/.mlflow/credentials)
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... tune-lsd server --artifacts-destination s3://bucket/mlflow
      (artifacts in object storage; only the server needs the S3 credentials)
"""
EPILOG_CLUSTER = """examples:
  tune-lsd cluster up --workers 2 --cpus-per-node 1     # head + 2 workers on 127.0.0.1
  tune-lsd search --space lsd --address 127.0.0.1:6390 --num-samples 8 --max-concurrent 3
  tune-lsd cluster down
"""
EPILOG_EVALUATE = """examples:
  tune-lsd evaluate --checkpoint runs/train/demo/best.pt
  tune-lsd evaluate --checkpoint best.pt --split val
"""
EPILOG_EMBED = """MODEL: a models:/ or runs:/ URI (resolved in --tracking-uri, default the runs folder's store),
an MLflow model folder, or a tune_lsd model file (best.pt of `tune-lsd train`, a trial's model.pt).

examples:
  tune-lsd embed --model models:/demo-best@champion --images photos/ -o embeddings.npy
  tune-lsd embed --model runs/train/demo/best.pt --images photos/ -o embeddings.npy
"""
EPILOG_RETRIEVE = """MODEL as for `tune-lsd embed`. With DIR/<class>/* folders, neighbours are marked correct or
wrong and Recall@1 / Recall@k are given; with --query equal to --gallery, each image is a
query against the others.

examples:
  tune-lsd retrieve --model models:/demo-best@champion --gallery shop/ --query photos/ -k 5 -o retrieval/
"""


def resolve_config_path(name: str) -> Path:
    """A YAML path, or the name of a config shipped in ``search_spaces/configs/``."""
    from search_spaces import CONFIG_DIR
    from search_spaces.loader import resolve_yaml

    return resolve_yaml(name, CONFIG_DIR, "config")


def _train(args: argparse.Namespace) -> int:
    from tune_lsd.train import train_and_test

    overrides = [*args.set, *(["data.cache=false"] if args.no_cache else [])]
    config = Config.load(resolve_config_path(args.config), overrides) if args.config else Config().with_overrides(overrides)
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


def _load_embedder(args: argparse.Namespace):
    """The model of ``--model``; a models:/ or runs:/ URI is looked up in an existing store."""
    from tune_lsd.serving.retrieval import is_model_uri, load_embedder

    return load_embedder(args.model, _existing_store(args) if is_model_uri(args.model) else None)


def _embed(args: argparse.Namespace) -> int:
    from tune_lsd.serving.retrieval import embed_folder

    embedder = _load_embedder(args)
    count, paths_file = embed_folder(embedder, Path(args.images), Path(args.output))
    print(f"wrote {count} embeddings to {args.output} (image paths, in order: {paths_file})")
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    from tune_lsd.serving.retrieval import write_retrieval

    embedder = _load_embedder(args)
    result = write_retrieval(embedder, Path(args.gallery), Path(args.query or args.gallery), args.k, Path(args.output))
    recalls = "  ".join(f"{key} {value:.4f}" for key, value in result.items() if key.startswith("recall@"))
    print(f"{result['queries']} queries x {result['k']} neighbours in {result['gallery']} gallery images"
          + (f": {recalls}" if recalls else ""))
    print(f"wrote {result['csv']}\nopen it: {Path(result['page']).resolve().as_uri()}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from tune_lsd.search import SearchSettings, resume_search, run_search

    if args.resume:
        summary = resume_search(args.resume, runs_dir=args.runs_dir, storage=args.storage)
        return 130 if summary["state"] == "interrupted" else 0
    if args.extend:
        from tune_lsd.search.extend import extend_search

        summary = extend_search(args.extend, args.num_samples, runs_dir=args.runs_dir, storage=args.storage)
        return 130 if summary["state"] == "interrupted" else 0
    settings = _validated(SearchSettings,
        name=args.name or datetime.now().strftime("search-%Y%m%d-%H%M%S"), space=args.space,
        overrides=[*args.set, *(["data.cache=false"] if args.no_cache else [])],
        searcher=args.searcher, scheduler=args.scheduler, metric=args.metric, mode=args.mode,
        num_samples=args.num_samples, max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, seed=args.seed, startup_trials=args.startup_trials,
        grace_period=args.grace_period,
        perturbation_interval=args.perturbation_interval, max_failures=args.max_failures,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        time_budget_s=args.time_budget_s, share_data=not args.no_shared_data, object_store_mb=args.object_store_mb,
        address=args.address,
        tracking_uri=args.tracking_uri, runs_dir=args.runs_dir, storage=args.storage)
    if settings.storage_location.is_remote:
        settings.storage_location.check_writable()  # one line, before anything else, when it cannot be used
    if settings.settings_location.exists():
        raise ConfigError(f"a search named {settings.name!r} already exists in {settings.storage_location.uri}: "
                          f"pick another --name or continue it with --resume {settings.name}")
    summary = run_search(settings)
    return 130 if summary["state"] == "interrupted" else 0


def _validated(model, **values):
    """``model(**values)``; a pydantic error becomes one line naming the command-line option."""
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0])
        message = first["msg"][0].lower() + first["msg"][1:]
        if first["type"] == "string_pattern_mismatch":  # the field's description says what is allowed
            message = model.model_fields[field].description
        raise ConfigError(f"--{field.replace('_', '-')} {first['input']!r}: {message}") from None


def _prune(args: argparse.Namespace) -> int:
    from tune_lsd.search import prune_search

    prune_search(args.name, runs_dir=args.runs_dir, storage=args.storage)
    return 0


def _sync(args: argparse.Namespace) -> int:
    from tune_lsd.search import sync_search

    sync_search(args.name, runs_dir=args.runs_dir, storage=args.storage)
    return 0


def _finalize(args: argparse.Namespace) -> int:
    from tune_lsd.search import finalize_search

    finalize_search(args.name, runs_dir=args.runs_dir, storage=args.storage, overrides=args.set)
    return 0


def _tracking_uri(args: argparse.Namespace) -> str:
    from tune_lsd.tracking import default_tracking_uri

    return args.tracking_uri or default_tracking_uri(Path(args.runs_dir).resolve())


def _existing_store(args: argparse.Namespace) -> str:
    """The tracking URI for commands that only read: a missing SQLite file is an error, not a new store."""
    from tune_lsd.tracking import check_tracking_uri

    uri = _tracking_uri(args)
    check_tracking_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(f"no MLflow store at {uri.removeprefix('sqlite:///')}: run a search first, "
                                "or point --runs-dir / --tracking-uri at one")
    return uri


def _export(args: argparse.Namespace) -> int:
    from tune_lsd.export import export_best_config

    exported = export_best_config(_existing_store(args), args.experiment, Path(args.output), args.metric, args.mode)
    print(f"exported trial {exported['trial']} ({args.metric} {exported['value']:.4f}) to {exported['output']}")
    print(f"next: tune-lsd train --config {exported['output']}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from tune_lsd.report import write_report

    uri = _existing_store(args)
    out = Path(args.output or Path(args.runs_dir) / "reports" / args.name).resolve()
    print(f"report of search {args.name!r}: reading trials from {uri}", flush=True)
    report = write_report(uri, args.name, out, args.metric, args.mode, log_to_mlflow=not args.no_mlflow)
    print(f"wrote {report}" + ("" if args.no_mlflow else " (also logged to the search's MLflow parent run, report/)"))
    print(f"open it: {report.as_uri()}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from tune_lsd.compare import CompareSettings, resume_compare, run_compare

    if args.resume:
        resume_compare(args.resume, runs_dir=args.runs_dir)
        return 0
    if not args.name:
        raise ConfigError("tune-lsd compare needs --name NAME (or --resume NAME)")
    settings = _validated(CompareSettings, name=args.name, spaces=[s.strip() for s in args.spaces.split(",")],
                          num_samples=args.num_samples, search_seeds=args.search_seeds, seeds=args.seeds,
                          overrides=args.set, max_concurrent=args.max_concurrent, gpus_per_trial=args.gpus_per_trial,
                          threads=args.threads, runs_dir=args.runs_dir)
    run_compare(settings)
    return 0


def _cache(args: argparse.Namespace) -> int:
    from tune_lsd.data import cache
    from tune_lsd.data.memory import gigabytes

    if args.action == "clear":
        count, size = cache.clear()
        print(f"removed {count} decoded datasets ({gigabytes(size)}) from {cache.cache_root()}")
        return 0
    entries = cache.list_entries()
    print(f"{len(entries)} decoded datasets in {cache.cache_root()}, {gigabytes(sum(e.bytes for e in entries))} in all")
    width = max((len(entry.description) for entry in entries), default=0)
    for entry in entries:
        created = datetime.fromtimestamp(entry.created).strftime("%Y-%m-%d %H:%M")
        print(f"  {entry.description:<{width}}  {entry.images:>9,} images at {entry.size:>4} px  {gigabytes(entry.bytes):>9}  "
              f"decoded {created} in {entry.decode_seconds:,.0f} s  {entry.path.name}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    from tune_lsd.report import list_searches

    uri = _existing_store(args)
    rows = list_searches(uri, args.metric)
    if not rows:
        print(f"no searches in {uri}")
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'search':<{width}}  {'state':<22} {'trials':>6} {'errored':>7}  {'best ' + args.metric:>18}  started")
    for row in rows:
        best = "-" if row["best"] is None else f"{row['best']:.4f}"
        started = datetime.fromtimestamp(row["started_ms"] / 1000).strftime("%Y-%m-%d %H:%M")
        print(f"{row['name']:<{width}}  {row['state']:<22} {row['trials']:>6} {row['errored']:>7}  {best:>18}  {started}")
    return 0


def _ui(args: argparse.Namespace) -> int:
    uri = _existing_store(args)
    _check_port_free(args.host, args.port)
    print(f"MLflow UI of {uri} at http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
               "--port", str(args.port), "--workers", "1"]
    return _serve(command)


def _check_port_free(host: str, port: int) -> None:
    """One line instead of the server's traceback when something already listens on the port."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(f"cannot serve on {host}:{port} ({error.strerror}): pick another with --port") from None


def _serve(command: list[str], environment: dict[str, str] | None = None) -> int:
    """Run an MLflow server in the foreground (``environment``: added to this process's);
    Ctrl-C or SIGTERM ends it with every process it started."""
    import signal
    import subprocess

    from tune_lsd.cluster import end_process_tree

    server = subprocess.Popen(command, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(environment or {})})

    def stop(*_) -> None:
        end_process_tree(server.pid, grace_s=10)

    signal.signal(signal.SIGTERM, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        stop()
        return 130


def _server(args: argparse.Namespace) -> int:
    from tune_lsd.tracking import artifact_store, auth_server_environment, server_command

    _check_port_free(args.host, args.port)
    runs_dir = Path(args.runs_dir).resolve()
    artifacts, artifact_environment = artifact_store(args.artifacts_destination or str(runs_dir / "server-artifacts"))
    environment = {**artifact_environment, **(auth_server_environment(runs_dir / "server-auth") if args.auth else {})}
    runs_dir.mkdir(parents=True, exist_ok=True)
    backend = args.backend_store_uri or f"sqlite:///{runs_dir / 'mlflow-server.db'}"
    command = server_command(backend, artifacts, args.host, args.port, auth=args.auth)
    loopback = args.host in ("127.0.0.1", "localhost", "::1")
    if not loopback:
        command += ["--allowed-hosts", args.allowed_hosts or "*"]
        if not args.auth:
            print(f"warning: serving on {args.host} without --auth: anyone who reaches port {args.port} can read, "
                  "change and delete every search", flush=True)
    print(f"MLflow tracking server on http://{args.host}:{args.port} (store {backend}, artifacts {artifacts}"
          f"{', basic authentication: users in ' + str(runs_dir / 'server-auth') if args.auth else ''}); "
          f"use --tracking-uri http://{args.host}:{args.port}", flush=True)
    return _serve(command, environment)


def _cluster(args: argparse.Namespace) -> int:
    from tune_lsd.cluster import cluster_down, cluster_up

    runs_dir = Path(args.runs_dir).resolve()
    if args.action == "down":
        print(f"ended {cluster_down(runs_dir)} Ray nodes")
        return 0
    address = cluster_up(runs_dir, port=args.port, workers=args.workers, cpus_per_node=args.cpus_per_node,
                         gpus_per_node=args.gpus_per_node, object_store_mb=args.object_store_mb, auth=args.auth)
    print(f"Ray cluster up at {address}: head + {args.workers} workers (pids in {runs_dir / 'cluster' / 'nodes.json'})")
    print(f"search on it:   tune-lsd search --address {address} --runs-dir {args.runs_dir} ...")
    print(f"more machines:  RAY_AUTH_MODE={args.auth} ray start --address=<this host>:{args.port} --block")
    print(f"end it:         tune-lsd cluster down --runs-dir {args.runs_dir}")
    return 0


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """Where an existing MLflow store is: a tracking server, or the SQLite file in a runs folder."""
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the SQLite file in --runs-dir)")
    parser.add_argument("--runs-dir", default="runs", help="the runs folder of the searches")


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
    train.add_argument("--no-cache", action="store_true", help=NO_CACHE_HELP)
    train.set_defaults(handler=_train)

    search = commands.add_parser("search", help="run a hyperparameter search on Ray Tune, tracked in MLflow",
                                 epilog=EPILOG_SEARCH, formatter_class=argparse.RawDescriptionHelpFormatter)
    search.add_argument("--space", default="lsd", help="shipped space name (lsd, baseline, lsd_pbt) or a YAML file")
    search.add_argument("--name", help="search name: MLflow experiment and results folder (default: search-<time>)")
    search.add_argument("--resume", metavar="NAME", help="continue the search NAME whose driver died")
    search.add_argument("--extend", metavar="NAME", help="run --num-samples more trials of the completed search NAME, "
                        "its searcher started from every earlier result")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of the base config")
    search.add_argument("--searcher", choices=["optuna", "gp", "random"], default="optuna",
                        help="optuna = TPE; gp = Optuna's Gaussian-process sampler (conditional parameters such as the EMA momentum sampled at random); random")
    search.add_argument("--scheduler", choices=["asha", "pbt", "fifo"], default="asha")
    search.add_argument("--metric", default="val/recall@1")
    search.add_argument("--mode", choices=["max", "min"], default="max")
    search.add_argument("--num-samples", type=int, default=8, help="number of trials")
    search.add_argument("--max-concurrent", type=int, default=2, help="trials running at the same time")
    search.add_argument("--cpus-per-trial", type=float, default=1.0)
    search.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions share a GPU, e.g. 0.25")
    search.add_argument("--seed", type=int, default=0, help="seed of the searcher")
    search.add_argument("--startup-trials", type=int, metavar="N",
                        help="optuna, gp: random trials before the model is used (default: num-samples / 4, 3 to 10)")
    search.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial may be stopped")
    search.add_argument("--perturbation-interval", type=int, default=2, help="PBT: epochs between exploit/explore")
    search.add_argument("--max-failures", type=int, default=0, help="retries of a failed trial")
    search.add_argument("--checkpoint-every", type=int, default=1, metavar="K",
                        help="epochs between a trial's checkpoints (what a resumed or restarted trial restarts from; "
                             "PBT uses its --perturbation-interval)")
    search.add_argument("--keep-checkpoints", action="store_true",
                        help="keep finished trials' Ray checkpoints (default: deleted when the search completes; "
                             "each trial's best model stays in MLflow)")
    search.add_argument("--time-budget-s", type=float, help="stop starting/continuing trials after this many seconds")
    search.add_argument("--no-shared-data", action="store_true",
                        help="every trial decodes its own copy of the data (default: once per search, shared per node)")
    search.add_argument("--no-cache", action="store_true", help=NO_CACHE_HELP)
    search.add_argument("--object-store-mb", type=int, help="local Ray only: object store size (default: ~30%% of RAM)")
    search.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    search.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite file in --runs-dir)")
    search.add_argument("--runs-dir", default="runs", help="where results, checkpoints and the MLflow store go")
    search.add_argument("--storage", metavar="URI", help="where the search keeps what every node and a later driver read (Ray's checkpoints, the search's "
                        "records): a folder all nodes see, or s3://BUCKET/PREFIX (endpoint: AWS_ENDPOINT_URL_S3 or "
                        "?endpoint_override=HOST:PORT&scheme=http; credentials: AWS_ACCESS_KEY_ID / "
                        "AWS_SECRET_ACCESS_KEY or ~/.aws), gs://...; default: --runs-dir")
    search.set_defaults(handler=_search)

    export = commands.add_parser("export", help="write the best trial's config as YAML for the final retrain",
                                 epilog=EPILOG_EXPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("--experiment", required=True, help="the search name")
    export.add_argument("--output", "-o", default="best.yaml")
    export.add_argument("--metric", default="val/recall@1")
    export.add_argument("--mode", choices=["max", "min"], default="max")
    _add_store_arguments(export)
    export.set_defaults(handler=_export)

    ui = commands.add_parser("ui", help="serve the MLflow UI of the search results on 127.0.0.1",
                             epilog=EPILOG_UI, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_store_arguments(ui)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=_ui)

    report = commands.add_parser("report", help="write an HTML report (trials, curves, importance, best config) of a search",
                                 epilog=EPILOG_REPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("name", help="the search name")
    report.add_argument("--output", "-o", help="folder for report.html and its PNGs (default: runs/reports/NAME)")
    report.add_argument("--metric", default="val/recall@1")
    report.add_argument("--mode", choices=["max", "min"], default="max")
    report.add_argument("--no-mlflow", action="store_true", help="do not log the report to the search's parent run")
    _add_store_arguments(report)
    report.set_defaults(handler=_report)

    prune = commands.add_parser("prune", help="delete the Ray checkpoints of a search's finished trials",
                                epilog=EPILOG_PRUNE, formatter_class=argparse.RawDescriptionHelpFormatter)
    prune.add_argument("name", help="the search name")
    prune.add_argument("--runs-dir", default="runs", help="the runs folder of the search")
    prune.add_argument("--storage", metavar="URI", help="the --storage the search was started with")
    prune.set_defaults(handler=_prune)

    sync = commands.add_parser("sync", help="deliver to MLflow what a search kept while its tracking server was down",
                               epilog=EPILOG_SYNC, formatter_class=argparse.RawDescriptionHelpFormatter)
    sync.add_argument("name", help="the search name")
    sync.add_argument("--runs-dir", default="runs", help="the runs folder of the search")
    sync.add_argument("--storage", metavar="URI", help="the --storage the search was started with")
    sync.set_defaults(handler=_sync)

    finalize = commands.add_parser("finalize", help="retrain the best config on all training classes, test it once "
                                   "and register it as the champion", epilog=EPILOG_FINALIZE,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    finalize.add_argument("name", help="the search name")
    finalize.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override of the exported config, e.g. schedule.epochs=10")
    finalize.add_argument("--runs-dir", default="runs", help="the runs folder of the search")
    finalize.add_argument("--storage", metavar="URI", help="the --storage the search was started with")
    finalize.set_defaults(handler=_finalize)

    ls = commands.add_parser("ls", help="list the searches with state, trial count and best metric",
                             epilog=EPILOG_LS, formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("--metric", default="val/recall@1")
    _add_store_arguments(ls)
    ls.set_defaults(handler=_ls)

    server = commands.add_parser("server", help="run a shared MLflow tracking server for a cluster's trials",
                                 epilog=EPILOG_SERVER, formatter_class=argparse.RawDescriptionHelpFormatter)
    server.add_argument("--backend-store-uri", help="sqlite:///... (default: runs/mlflow-server.db) or postgresql://...")
    server.add_argument("--artifacts-destination", help="where artifacts are stored: a folder (default: "
                        "runs/server-artifacts) or s3://BUCKET/PREFIX (as --storage of search; the server needs "
                        "the S3 credentials, trials and the UI do not)")
    server.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 to serve other machines")
    server.add_argument("--port", type=int, default=5000)
    server.add_argument("--allowed-hosts", help="with a non-local --host: comma-separated Host headers to accept")
    server.add_argument("--auth", action="store_true",
                        help="require a user and password (MLflow basic auth); the admin's credentials come from "
                             "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or ~/.mlflow/credentials")
    server.add_argument("--runs-dir", default="runs")
    server.set_defaults(handler=_server)

    cluster = commands.add_parser("cluster", help="start (up) or end (down) a Ray cluster of this machine's nodes, by pid",
                                  epilog=EPILOG_CLUSTER, formatter_class=argparse.RawDescriptionHelpFormatter)
    cluster.add_argument("action", choices=["up", "down"])
    cluster.add_argument("--workers", type=int, default=1, help="worker nodes besides the head")
    cluster.add_argument("--port", type=int, default=6390, help="the head's GCS port")
    cluster.add_argument("--cpus-per-node", type=float, default=1)
    cluster.add_argument("--gpus-per-node", type=float, help="default: what Ray detects")
    cluster.add_argument("--object-store-mb", type=int, default=300)
    cluster.add_argument("--auth", choices=["disabled", "token"], default="disabled",
                         help="Ray 2.60 token authentication; every node and driver must agree")
    cluster.add_argument("--runs-dir", default="runs")
    cluster.set_defaults(handler=_cluster)

    compare = commands.add_parser("compare", help="search two spaces with paired seeds: their test difference, "
                                  "intervals and a verdict", epilog=EPILOG_COMPARE,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_argument("--name", help="the comparison's name (its searches are NAME-SPACE-sK)")
    compare.add_argument("--resume", metavar="NAME", help="continue the comparison NAME where it stopped")
    compare.add_argument("--spaces", default="lsd,baseline", help="the two spaces A,B (differences are A - B)")
    compare.add_argument("--num-samples", type=int, default=8, help="trials of each search")
    compare.add_argument("--search-seeds", type=int, default=1, help="searches per space (searcher seeds 0..S-1)")
    compare.add_argument("--seeds", type=int, default=3, help="retrains of each winner (seeds 0..R-1, paired)")
    compare.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every search")
    compare.add_argument("--max-concurrent", type=int, default=2)
    compare.add_argument("--gpus-per-trial", type=float, default=0.0)
    compare.add_argument("--threads", type=int, help="CPU threads of each retrain (default: torch's)")
    compare.add_argument("--runs-dir", default="runs")
    compare.set_defaults(handler=_compare)

    cache = commands.add_parser("cache", help="show (ls) or remove (clear) this machine's decoded datasets",
                                epilog=EPILOG_CACHE, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache.add_argument("action", choices=["ls", "clear"])
    cache.set_defaults(handler=_cache)

    evaluate = commands.add_parser("evaluate", help="retrieval metrics of a checkpoint",
                                   epilog=EPILOG_EVALUATE, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("--checkpoint", required=True, help="a best.pt written by `tune-lsd train`")
    evaluate.add_argument("--split", choices=["test", "val"], default="test")
    evaluate.set_defaults(handler=_evaluate)

    embed = commands.add_parser("embed", help="embed a folder of images with a trained model (.npy)",
                                epilog=EPILOG_EMBED, formatter_class=argparse.RawDescriptionHelpFormatter)
    embed.add_argument("--model", required=True, help="models:/NAME@champion, runs:/RUN/model, a folder or a model file")
    embed.add_argument("--images", required=True, help="folder of images (searched recursively)")
    embed.add_argument("--output", "-o", default="embeddings.npy")
    _add_store_arguments(embed)
    embed.set_defaults(handler=_embed)

    retrieve = commands.add_parser("retrieve", help="nearest gallery images of query images: CSV + HTML page",
                                   epilog=EPILOG_RETRIEVE, formatter_class=argparse.RawDescriptionHelpFormatter)
    retrieve.add_argument("--model", required=True, help="models:/NAME@champion, runs:/RUN/model, a folder or a model file")
    retrieve.add_argument("--gallery", required=True, help="folder of gallery images")
    retrieve.add_argument("--query", help="folder of query images (default: the gallery, each image against the others)")
    retrieve.add_argument("-k", type=int, default=5, help="neighbours per query")
    retrieve.add_argument("--output", "-o", default="retrieval", help="folder for neighbours.csv and index.html")
    _add_store_arguments(retrieve)
    retrieve.set_defaults(handler=_retrieve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own progress lines instead
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # tune_lsd retries (an outage: minutes otherwise)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    if args.debug:
        return args.handler(args)
    warnings.simplefilter("default")
    for noisy in (DeprecationWarning, FutureWarning):  # libraries' deprecations are not the user's business
        warnings.simplefilter("ignore", noisy)
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as error:  # our errors are one line; ask --debug for more
        print(f"error: {error}", file=sys.stderr)
        return 2


def run() -> None:
    """The ``tune-lsd`` command: :func:`main`, then a quick exit.

    After a command has finished, Python's teardown of torch's, Ray's and MLflow's modules
    takes 0.8-2.5 s on 2 cores. When nothing but daemon threads is left (which a normal exit
    would not wait for either), the atexit handlers (logging, MLflow's, temporary folders) run,
    the output is flushed and the process ends without that teardown.
    """
    code = main()
    if all(thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
