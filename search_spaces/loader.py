"""Search spaces: YAML files that name a base config and a distribution per dotted key.

A space file looks like::

    description: LSD parameters with lr and weight decay
    base: glyphs_search          # a shipped config name or a YAML path
    fixed:                       # optional overrides of the base config
      schedule.epochs: 5
    params:
      optim.lr:         {type: loguniform, low: 3.0e-4, high: 3.0e-3}
      lsd.teacher:      {type: choice, values: [ema, epoch]}
      lsd.ema_momentum: {type: uniform, low: 0.8, high: 0.98, when: {lsd.teacher: ema}}
    pbt:                         # optional: keys PBT may mutate (default: all numeric params)
      mutate: [optim.lr, lsd.weight]

Every key is checked against the config schema before anything starts (unknown key,
low > high, a condition on a key that is neither a parameter nor in the config, a value
the schema rejects: one line naming the key). A loaded space gives an Optuna
define-by-run function (conditions respected: a parameter whose condition is false is not
sampled at all) and a Ray Tune param space (for random search and PBT mutations).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from search_spaces import CONFIG_DIR, SPACE_DIR
from tune_lsd.config import Config, ConfigError, allowed_keys, read_yaml_mapping
from tune_lsd.errors import TuneLsdError


class SearchSpaceError(TuneLsdError, ValueError):
    """A search space is invalid (message is one line naming the key)."""


class ParamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None
    when: dict[str, Any] | None = Field(None, description="Sample only when these keys have these values.")

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of a range parameter (checked when the space is loaded)."""
        if self.low is None or self.high is None:
            raise SearchSpaceError(f"a {self.type} parameter needs low and high")
        return self.low, self.high

    @property
    def choices(self) -> list[Any]:
        """The values of a choice parameter (checked when the space is loaded)."""
        if not self.values:
            raise SearchSpaceError("a choice parameter needs values")
        return self.values

    def optuna_distribution(self):
        """The Optuna distribution this parameter samples from (what define_by_run suggests)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "choice":
            return CategoricalDistribution(self.choices)
        low, high = self.bounds
        if self.type == "int":
            return IntDistribution(int(low), int(high))
        return FloatDistribution(low, high, log=self.type == "loguniform")


class PBTSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mutate: list[str] | None = None


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    base: str
    fixed: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, ParamSpec]
    pbt: PBTSpec = Field(default_factory=PBTSpec)
    name: str = ""

    # --- derived configs ---------------------------------------------------------------

    def base_config(self) -> Config:
        """The base config with the fixed overrides applied."""
        return Config.load(resolve_yaml(self.base, CONFIG_DIR, "config"), self.fixed)

    def trial_config(self, sampled: dict[str, Any]) -> Config:
        """The full config of one trial: base + fixed + sampled values (None = not sampled)."""
        return self.base_config().with_overrides({k: v for k, v in sampled.items() if v is not None})

    # --- searchers ---------------------------------------------------------------------

    def optuna_space(self):
        """A picklable define-by-run function for ``OptunaSearch(space=...)``."""
        return functools.partial(define_by_run, {**self.model_dump(), "_base_values": self.base_config().flat()})

    def tune_param_space(self) -> dict[str, Any]:
        """Ray Tune distributions per key; conditional keys sample None when their condition fails."""
        from ray import tune

        space: dict[str, Any] = {}
        for key, spec in self.params.items():
            domain = _tune_domain(spec)
            if spec.when:
                domain = tune.sample_from(functools.partial(_conditional_sample, domain, spec.when))
            space[key] = domain
        return space

    def pbt_mutations(self) -> dict[str, Any]:
        """Keys PBT may resample/perturb, as Tune domains (numeric unconditional params by default)."""
        keys = self.pbt.mutate or [k for k, s in self.params.items() if s.type != "choice" and not s.when]
        return {key: _tune_domain(self.params[key]) for key in keys}


def define_by_run(space: dict[str, Any], trial) -> dict[str, Any]:
    """Sample every parameter whose condition holds, in file order; return no constants."""
    chosen: dict[str, Any] = {}
    base_values = space.get("_base_values", {})
    for key, spec in space["params"].items():
        if spec.get("when") and not all(chosen.get(k, base_values.get(k)) == v for k, v in spec["when"].items()):
            continue
        kind = spec["type"]
        if kind == "choice":
            chosen[key] = trial.suggest_categorical(key, spec["values"])
        elif kind == "int":
            chosen[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]))
        else:
            chosen[key] = trial.suggest_float(key, spec["low"], spec["high"], log=kind == "loguniform")
    return {}


def _tune_domain(spec: ParamSpec):
    from ray import tune

    if spec.type == "choice":
        return tune.choice(spec.choices)
    low, high = spec.bounds
    if spec.type == "int":
        return tune.randint(int(low), int(high) + 1)
    if spec.type == "loguniform":
        return tune.loguniform(low, high)
    return tune.uniform(low, high)


def _conditional_sample(domain, when: dict[str, Any], spec) -> Any:
    config = spec.config
    if all(config.get(key) == value for key, value in when.items()):
        return domain.sample()
    return None


# --- loading and validation ----------------------------------------------------------------


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACE_DIR.glob("*.yaml"))


def load_space(name_or_path: str) -> SearchSpace:
    """Load and validate a shipped space by name, or a YAML file."""
    path = resolve_yaml(name_or_path, SPACE_DIR, "search space")
    raw = read_yaml_mapping(path, "search space")
    try:
        space = SearchSpace.model_validate({**raw, "name": raw.get("name") or path.stem})
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(p) for p in first["loc"])
        raise SearchSpaceError(f"search space {path.name}: {location}: {first['msg']}") from None
    if not space.params:
        raise SearchSpaceError(f"search space {path.name} has no params: name at least one key to search")
    validate_space(space)
    return space


def validate_space(space: SearchSpace) -> None:
    """Check every key and range against the config schema; raise one clear line."""
    schema_keys = set(allowed_keys())

    def known(key: str) -> bool:
        return key in schema_keys or key.startswith("loss.params.")

    try:
        base = space.base_config()
    except ConfigError as error:
        raise SearchSpaceError(f"search space {space.name!r}: base/fixed: {error}") from None
    base_flat = base.flat()
    for key, spec in space.params.items():
        where = f"search space {space.name!r}: {key}"
        if not known(key):
            raise SearchSpaceError(f"{where}: unknown config key (every key: docs/config.md)")
        if spec.type == "choice":
            if not spec.values:
                raise SearchSpaceError(f"{where}: choice needs a non-empty 'values' list")
            samples = list(spec.values)
        else:
            if spec.low is None or spec.high is None:
                raise SearchSpaceError(f"{where}: {spec.type} needs 'low' and 'high'")
            if spec.low >= spec.high:
                raise SearchSpaceError(f"{where}: low ({spec.low}) must be below high ({spec.high})")
            if spec.type == "loguniform" and spec.low <= 0:
                raise SearchSpaceError(f"{where}: loguniform needs low > 0")
            samples = [spec.low, spec.high] if spec.type != "int" else [int(spec.low), int(spec.high)]
        for condition_key in spec.when or {}:
            if condition_key not in space.params and condition_key not in base_flat:
                raise SearchSpaceError(
                    f"{where}: condition on {condition_key!r}, which is neither a parameter nor a config key"
                )
        for value in samples:  # the schema must accept both ends of every range
            try:
                base.with_overrides({key: value})
            except ConfigError as error:
                raise SearchSpaceError(f"{where}: value {value!r} rejected: {error}") from None
    for key in space.pbt.mutate or []:
        if key not in space.params:
            raise SearchSpaceError(f"search space {space.name!r}: pbt.mutate names {key!r}, which is not a parameter")


def resolve_yaml(name_or_path: str, folder: Path, what: str) -> Path:
    """``name_or_path`` if it is a file, else ``folder/<name>.yaml``; one clear error otherwise."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = folder / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    choices = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
    raise SearchSpaceError(f"{what} {name_or_path!r} is neither a file nor one of: {choices}")
