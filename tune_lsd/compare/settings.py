"""What a comparison runs (saved in its state file, so that ``--resume NAME`` needs nothing else)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tune_lsd.search.settings import SearchSettings

METRICS = {"test/recall@1": "Recall@1", "test/map@r": "MAP@R"}  # compared on the test classes


class CompareSettings(BaseModel):
    """What a comparison runs; saved in its state file so that ``--resume NAME`` needs nothing else."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="the comparison's name (its searches are NAME-SPACE-sK): letters, digits, '.', '_' and '-'",
    )
    spaces: list[str] = Field(
        default_factory=lambda: ["lsd", "baseline"],
        min_length=2,
        max_length=2,
        description="the two search spaces A,B (differences are A - B)",
        json_schema_extra={"separator": ",", "metavar": "A,B"},
    )
    num_samples: int = Field(8, ge=1, description="trials of each search")
    search_seeds: int = Field(1, ge=1, description="searches per space (searcher seeds 0 .. S-1)")
    seeds: int = Field(3, ge=1, description="retrains of each search's winner (seeds 0 .. R-1, the same on both sides)")
    overrides: list[str] = Field(
        default_factory=list,
        description="override of the base config of every search",
        json_schema_extra={"flag": "--set", "metavar": "KEY=VALUE"},
    )
    max_concurrent: int = Field(2, ge=1, description="trials of a search running at the same time")
    gpus_per_trial: float = Field(0.0, ge=0, description="GPUs Ray reserves for each trial; fractions share a GPU")
    threads: int | None = Field(None, ge=1, description="CPU threads of each retrain (default: torch's)")
    runs_dir: str = Field("runs", description="the folder of the searches, retrains and the MLflow store")

    @property
    def folder(self) -> Path:
        return Path(self.runs_dir).resolve() / "comparisons" / self.name

    def search_name(self, space: str, search_seed: int) -> str:
        return f"{self.name}-{space}-s{search_seed}"

    def search_names(self) -> list[str]:
        return [self.search_name(space, k) for space in self.spaces for k in range(self.search_seeds)]

    def search_settings(self, space: str, search_seed: int) -> SearchSettings:
        return SearchSettings(
            name=self.search_name(space, search_seed),
            space=space,
            num_samples=self.num_samples,
            max_concurrent=self.max_concurrent,
            gpus_per_trial=self.gpus_per_trial,
            seed=search_seed,
            overrides=self.overrides,
            runs_dir=self.runs_dir,
        )
