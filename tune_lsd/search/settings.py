"""What a search is asked to do: :class:`SearchSettings`, saved as ``search.yaml`` so that
``--resume NAME`` needs nothing else, and the search space they name, checked before Ray starts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from search_spaces.loader import SearchSpace, SearchSpaceError, load_space, validate_space
from tune_lsd.config import parse_override
from tune_lsd.errors import TuneLsdError
from tune_lsd.storage import DEFAULT_PATIENCE_S, Location

SearcherName = Literal["optuna", "gp", "random"]
SchedulerName = Literal["asha", "pbt", "fifo"]
SETTINGS_FILE = "search.yaml"
COMPLETED_FILE = "completed.json"  # next to search.yaml once the search has run to its end
EXTENSION_MARK = ".ext-"  # Ray experiment of a round of --extend: NAME.ext-<trials before it>


class SearchError(TuneLsdError, RuntimeError):
    """The search cannot start or continue (message is one line)."""


class SearchSettings(BaseModel):
    """Everything a search needs; saved next to the results so that --resume can rebuild it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="MLflow experiment and folder name: letters, digits, '.', '_' and '-'",
    )
    space: str = Field("lsd", description="shipped space name (lsd, baseline, lsd_pbt, ...) or a YAML file")
    overrides: list[str] = Field(
        default_factory=list,
        description="override of the base config, e.g. schedule.epochs=10",
        json_schema_extra={"flag": "--set", "metavar": "KEY=VALUE"},
    )
    searcher: SearcherName = Field(
        "optuna",
        description="optuna = TPE; gp = Optuna's Gaussian-process sampler (conditional parameters such as "
        "the EMA momentum sampled at random); random",
    )
    scheduler: SchedulerName = Field(
        "asha",
        description="asha = early stopping; pbt = population-based training; fifo = every trial runs all its epochs",
    )
    metric: str = Field("val/recall@1", description="the validation metric the search optimises")
    mode: Literal["max", "min"] = Field("max", description="whether a larger or a smaller --metric is better")
    num_samples: int = Field(8, ge=1, description="number of trials")
    max_concurrent: int = Field(2, ge=1, description="trials running at the same time")
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs Ray reserves for each trial")
    gpus_per_trial: float = Field(
        0.0, ge=0, description="GPUs Ray reserves for each trial; fractions share a GPU, e.g. 0.25"
    )
    seed: int = Field(0, description="seed of the searcher")
    startup_trials: int | None = Field(
        None,
        ge=0,
        description="optuna, gp: trials sampled at random before the model is used "
        "(default: a quarter of --num-samples, at least 3 and at most Optuna's 10)",
        json_schema_extra={"metavar": "N"},
    )
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial can be stopped")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA: 1/reduction_factor of the trials go on at each rung")
    perturbation_interval: int = Field(2, ge=1, description="PBT: epochs between exploit/explore")
    max_failures: int = Field(0, ge=0, description="retries of a failed trial")
    checkpoint_every: int = Field(
        1,
        ge=1,
        description="epochs between a trial's checkpoints (what a resumed or restarted trial restarts "
        "from; PBT uses its --perturbation-interval)",
        json_schema_extra={"metavar": "K"},
    )
    keep_checkpoints: bool = Field(
        False,
        description="keep finished trials' Ray checkpoints when the search "
        "completes (default: deleted; each trial's best model stays in MLflow)",
    )
    keep_models: int = Field(
        10,
        ge=0,
        description="trial models kept in MLflow: those of the N best trials by --metric; the other ended "
        "trials' models are deleted during the search and at its end (their metrics and configs stay); "
        "0 keeps every trial's model",
        json_schema_extra={"metavar": "N"},
    )
    share_data: bool = Field(
        True,
        description="every trial decodes its own copy of the data (default: once per "
        "search, shared per node through Ray's object store)",
        json_schema_extra={"flag": "--no-shared-data"},
    )
    object_store_mb: int | None = Field(
        None, gt=0, description="local Ray only: object store size in MB (default: Ray's, ~30% of RAM)"
    )
    time_budget_s: float | None = Field(None, description="stop starting/continuing trials after this many seconds")
    earlier_trials: int = Field(
        0,
        ge=0,
        description="trials the search ran before `--extend` (their results start "
        "the searcher); this round runs num_samples more in a Ray experiment of its own",
    )
    address: str | None = Field(None, description="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: the SQLite file in --runs-dir)")
    runs_dir: str = Field(
        "runs", description="this machine's folder of results, tracking spools and the default MLflow store"
    )
    storage: str | None = Field(
        None,
        description="where the search keeps what every node and a later driver read (Ray's checkpoints, the "
        "search's records): a folder all nodes see, or s3://BUCKET/PREFIX (endpoint: AWS_ENDPOINT_URL_S3 or "
        "?endpoint_override=HOST:PORT&scheme=http; credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
        "~/.aws), gs://...; default: --runs-dir",
        json_schema_extra={"metavar": "URI"},
    )
    storage_patience_s: float = Field(
        DEFAULT_PATIENCE_S,
        gt=0,
        description="how long the search and its trials wait for a --storage that does not answer (down, "
        "restarting, throttling) before the search fails; meanwhile a trial whose checkpoint cannot be uploaded "
        "waits instead of failing",
        json_schema_extra={"metavar": "SECONDS"},
    )

    @property
    def tpe_startup_trials(self) -> int:
        """Optuna's 10 random start-up trials would leave TPE unused in an 8-trial search."""
        return self.startup_trials if self.startup_trials is not None else min(10, max(3, self.num_samples // 4))

    @property
    def runs_path(self) -> Path:
        """This machine's runs folder: the default MLflow store, the tracking spools."""
        return Path(self.runs_dir).resolve()

    @property
    def storage_location(self) -> Location:
        """What every node and a later driver read: ``ray/`` (Ray Tune's experiment folders) and
        ``searches/`` (each search's settings and records); the runs folder unless ``storage``."""
        return Location(self.storage or self.runs_dir, self.storage_patience_s)

    @property
    def search_location(self) -> Location:
        return self.storage_location / "searches" / self.name

    @property
    def settings_location(self) -> Location:
        """``search.yaml``: these settings, so that ``--resume NAME`` needs nothing else."""
        return self.search_location / SETTINGS_FILE

    @property
    def completion_location(self) -> Location:
        """``completed.json``: written when the search has run to its end (``--resume`` then
        has nothing to continue; ``--extend`` removes it while its trials run)."""
        return self.search_location / COMPLETED_FILE

    @property
    def finished_location(self) -> Location:
        """Final results of finished trials (what --resume must not train again)."""
        return self.search_location / "finished"

    @property
    def undelivered_location(self) -> Location:
        """One file per trial whose tracking records are still spooled on some node."""
        return self.search_location / "undelivered"

    @property
    def ray_storage(self) -> Location:
        """Ray Tune's ``storage_path``."""
        return self.storage_location / "ray"

    @property
    def ray_name(self) -> str:
        """Ray Tune's experiment name of this round: the search's name, then ``NAME.ext-N`` for a
        round of ``--extend`` after N trials (each round's Ray state stays apart)."""
        return self.name if not self.earlier_trials else f"{self.name}{EXTENSION_MARK}{self.earlier_trials}"

    @property
    def experiment_location(self) -> Location:
        """Ray Tune's folder of this round of the search: trial results and checkpoints."""
        return self.ray_storage / self.ray_name

    def all_experiment_locations(self) -> list[Location]:
        """Ray Tune's folders of every round of the search (the first and each ``--extend``)."""
        return [
            self.ray_storage / folder
            for folder in self.ray_storage.folders()
            if folder == self.name or folder.startswith(f"{self.name}{EXTENSION_MARK}")
        ]

    @property
    def spool_path(self) -> Path:
        """Tracking records on their way to MLflow (see tune_lsd.tracking.spool), on this machine."""
        return self.runs_path / "searches" / self.name / "spool"

    def resolved_tracking_uri(self) -> str:
        from tune_lsd.tracking import default_tracking_uri  # MLflow: imported when a search runs, not by the CLI

        return self.tracking_uri or default_tracking_uri(self.runs_path)


def load_settings(name: str, runs_dir: str = "runs", storage: str | None = None) -> SearchSettings:
    """The settings search ``name`` saved when it started, found in ``storage`` (default: the
    runs folder); continued here, with this runs folder and storage."""
    where = Location(storage or runs_dir)
    if where.is_remote:  # at once, one line: an unreachable endpoint, a missing bucket, refused credentials
        where.check_writable()
    settings_location = where / "searches" / name / SETTINGS_FILE
    try:
        text = settings_location.read_text()
    except (OSError, FileNotFoundError):
        raise SearchError(f"no search named {name!r} in {where.uri} (looked for {settings_location.uri})") from None
    saved = yaml.safe_load(text)
    return SearchSettings.model_validate({**saved, "runs_dir": runs_dir, "storage": storage})


def prepare_space(settings: SearchSettings) -> SearchSpace:
    """Load the space and apply --set overrides to its fixed part; validated before Ray starts."""
    space = load_space(settings.space)
    if settings.overrides:
        space.fixed = {**space.fixed, **dict(parse_override(o) for o in settings.overrides)}
        try:
            validate_space(space)
        except SearchSpaceError as error:
            raise SearchSpaceError(str(error).replace("base/fixed", "--set")) from None
    if settings.scheduler == "pbt" and settings.searcher != "random":
        raise SearchError("the pbt scheduler samples its own population: use --searcher random with --scheduler pbt")
    return space
