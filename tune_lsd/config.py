"""The one configuration schema of tune_lsd.

Every part of the system (the ``train`` command, the Ray trainables, search spaces and the
exported best configuration) reads and writes this schema. A config is plain data: it loads
from YAML, saves to YAML and accepts dotted overrides such as ``lsd.temperature=0.1``.

Unknown or mistyped keys are errors that name the key and list the allowed ones.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tune_lsd.errors import TuneLsdError, first_line


class ConfigError(TuneLsdError, ValueError):
    """A configuration problem, with a message meant to be shown to the user as one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


DatasetName = Literal["glyphs", "cub", "cars", "sop", "inshop", "fashion_mnist", "folder"]


class DataConfig(_Section):
    """Which images, how they are split into train/val/test classes and how batches are built."""

    dataset: DatasetName = Field("glyphs", description="Which loader reads data.root (see docs/data.md).")
    root: str | None = Field(
        None,
        description="Dataset folder, or its URI in object storage (s3://bucket/CUB_200_2011: "
        "fetched once to this machine's cache); None uses the bundled glyph sample.",
    )
    image_size: int = Field(32, gt=0, description="Side of the square images the network sees.")
    load_size: int | None = Field(
        None,
        gt=0,
        description="Side of the square images are decoded to and kept in memory: the shorter side is "
        "resized to it and the centre square kept, never squashed (default: image_size).",
    )
    cache: bool = Field(
        True,
        description="Keep decoded folder datasets in this machine's decode cache and memory-map them from "
        "there next time ($TUNE_LSD_CACHE, else ~/.cache/tune_lsd; `tune-lsd cache ls|clear`).",
    )
    max_classes: int | None = Field(
        None, gt=1, description="Use only this many (seeded, random) training classes; None = all."
    )
    max_test_classes: int | None = Field(None, gt=1, description="Same, for the test classes.")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share of training classes held out for validation.")
    split_seed: int = Field(0, description="Seed of the class-disjoint train/val split.")
    final: bool = Field(
        False, description="Final retrain: train on ALL training classes (no validation), test once at the end."
    )
    samples_per_class: int = Field(4, ge=1, description="m of the m-per-class sampler.")
    batch_size: int = Field(128, ge=2, description="Images per training batch (samples_per_class per class).")
    label_noise: float = Field(0.0, ge=0.0, lt=1.0, description="Symmetric label noise on training labels only.")
    augment: Literal["auto", "none", "crop", "crop_flip"] = Field(
        "auto", description="auto = crop for glyphs/digits-like data, crop_flip for photos."
    )
    crop_scale_min: float = Field(0.6, gt=0.0, le=1.0, description="Smallest area share of a random resized crop.")
    eval_crop: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Evaluation: share of the image side kept by a centre crop before resizing "
        "to image_size (0.875 with load_size 256 and image_size 224: the literature's Resize 256 + CenterCrop 224).",
    )

    @property
    def stored_size(self) -> int:
        return self.load_size or self.image_size


class ModelConfig(_Section):
    """Backbone (any timm model) + linear embedding head + L2 normalisation."""

    backbone: str = Field("resnet10t", description="Any timm model name, e.g. resnet50, efficientnet_lite0.")
    embedding_dim: int = Field(128, gt=0, description="Size of the L2-normalised embedding.")
    pretrained: Literal["none", "efficientnet_lite0", "file", "hub"] = Field(
        "none",
        description="none = random init; efficientnet_lite0 = bundled ImageNet weights (offline); "
        "file = weights_path; hub = timm download (needs a network).",
    )
    weights_path: str | None = Field(None, description="A state dict file (torch.save) for pretrained=file.")
    freeze_bn: bool = Field(False, description="BatchNorm layers keep their running statistics (paper setting).")
    small_input_stem: bool = Field(
        True, description="Drop the stem max-pool of ResNet-like backbones (for 32-64 px images)."
    )

    @model_validator(mode="after")
    def _weights_path_given(self) -> ModelConfig:
        if self.pretrained == "file" and not self.weights_path:
            raise ValueError("model.pretrained=file needs model.weights_path")
        return self


LossName = Literal[
    "contrastive", "triplet", "margin", "multi_similarity", "proxy_anchor", "proxy_nca", "normalized_softmax"
]


class LossConfig(_Section):
    """The base DML loss (pytorch-metric-learning) and its miner."""

    name: LossName = Field("multi_similarity", description="The pytorch-metric-learning loss.")
    params: dict[str, float | int | bool] = Field(
        default_factory=dict, description="Keyword arguments of the pytorch-metric-learning loss class."
    )
    miner: Literal["auto", "none", "multi_similarity", "triplet_semihard", "distance_weighted", "pair_margin"] = Field(
        "auto", description="auto = the miner usually paired with the loss (none for proxy losses)."
    )
    proxy_lr_multiplier: float = Field(
        100.0, gt=0, description="Learning rate of proxies / class weights, as a multiple of optim.lr."
    )


class LSDConfig(_Section):
    """Listwise Self-Distillation (arXiv 2206.08880): how the loss and the teacher work is in docs/method.md."""

    enabled: bool = Field(True, description="Add the LSD term to the base loss.")
    weight: float = Field(10.0, ge=0.0, description="alpha: weight of the LSD term.")
    temperature: float = Field(1.0, gt=0.0, description="tau: softmax temperature of the similarity lists.")
    teacher: Literal["ema", "epoch"] = Field(
        "ema", description="ema = EMA of the student; epoch = previous epoch's student."
    )
    ema_momentum: float = Field(0.95, ge=0.0, lt=1.0, description="m: teacher <- m*teacher + (1-m)*student per step.")
    ema_warmup: bool = Field(False, description="timm ModelEmaV3 warm-up: the decay ramps up from 0.")
    ramp: Literal["linear", "constant", "none"] = Field(
        "linear", description="w(e): linear = e/E (paper), constant = 1, none = 0 (LSD logged but not trained on)."
    )
    start_epoch: int = Field(0, ge=0, description="The LSD term is off before this epoch.")


class OptimConfig(_Section):
    """The optimiser of the network (proxies get proxy_lr_multiplier x lr)."""

    name: Literal["adam", "adamw", "sgd"] = Field("adam", description="torch.optim optimiser.")
    lr: float = Field(1e-3, gt=0.0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty (decoupled for adamw).")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only.")
    grad_clip: float | None = Field(
        None, gt=0.0, description="Clip the gradient norm to this value; None = no clipping."
    )


class ScheduleConfig(_Section):
    """How long to train and how the learning rate moves."""

    epochs: int = Field(10, ge=1, description="Training epochs (one validation per epoch).")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="Learning-rate decay after warm-up.")
    warmup_epochs: int = Field(0, ge=0, description="Linear learning-rate warm-up epochs.")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="Batches per epoch; None = one pass over the training images."
    )


class EvalConfig(_Section):
    """Retrieval evaluation of the validation and test classes (faiss, exact search)."""

    ks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], description="Recall@K is reported for these K.")
    batch_size: int = Field(512, ge=1, description="Images per forward pass when embedding.")
    nmi: bool = Field(True, description="Also k-means NMI (slower on large sets).")

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, ks: list[int]) -> list[int]:
        if not ks or any(k < 1 for k in ks):
            raise ValueError("eval.ks must be a non-empty list of positive integers")
        return sorted(set(ks))


class RuntimeConfig(_Section):
    """Where and how a run executes."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available.")
    amp: bool = Field(True, description="bfloat16 autocast + channels_last on CUDA (ignored on CPU).")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None = leave as is.")
    progress: bool = Field(True, description="tqdm progress bars (off inside searches).")
    sync_every: int = Field(
        50,
        ge=1,
        description="Steps between reads of the running loss on the host: the NaN/inf check and the "
        "progress bar. Losses are summed on the device; reading them waits for the GPU.",
    )
    device_data_mb: int = Field(
        2048,
        ge=0,
        description="On CUDA, keep the uint8 images of a split on the GPU when they take at most this "
        "many MB (no host-to-device copy per batch); 0 = never.",
    )
    cudnn_benchmark: bool = Field(
        False,
        description="cuDNN tries its kernels for each new input shape and keeps the fastest: a few seconds "
        "more in a trial's first epoch, a faster step afterwards (worth it for long runs).",
    )
    compile: bool = Field(
        False,
        description="torch.compile the student and teacher: faster steps after a warm-up of tens of "
        "seconds (see docs/gpu.md for when it pays).",
    )


class Config(_Section):
    """A complete description of one training run."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    lsd: LSDConfig = Field(default_factory=LSDConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    seed: int = 0

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Validate a nested dict; raises ConfigError with one line naming the bad key."""
        _check_keys(values, cls, prefix="")
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise ConfigError(_one_line(error)) from None

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> Config:
        """Read a YAML file and apply dotted overrides (``["lsd.weight=5", ...]`` or a dict)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        values = read_yaml_mapping(path, "config")
        return cls.from_dict(apply_overrides(values, overrides or {}))

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> Config:
        """A copy with dotted overrides applied and validated."""
        return Config.from_dict(apply_overrides(self.to_dict(), overrides))

    # --- output -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    def flat(self) -> dict[str, Any]:
        """``{"lsd.weight": 10.0, ...}``: every leaf under its dotted key."""
        return flatten(self.to_dict())


# --- dotted keys ---------------------------------------------------------------------------


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys. Dict-valued leaves (``loss.params``) are descended into too."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """``"lsd.weight=5"`` -> ``("lsd.weight", 5)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({_yaml_problem(error)})") from None


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file (``what``: "config", "search space", ...); a
    one-line ConfigError when the file is malformed, empty or not a mapping."""
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {_yaml_problem(error)}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{what} {path} cannot be read: {error}") from None
    if values is None:
        raise ConfigError(f"{what} {path} is empty")
    if not isinstance(values, dict):
        raise ConfigError(
            f"{what} {path}: expected a mapping of sections at the top level, got {type(values).__name__}"
        )
    return values


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or first_line(error)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def apply_overrides(values: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``values`` with dotted overrides set. Keys are checked later."""
    pairs = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    result = yaml.safe_load(yaml.safe_dump(values))  # deep copy of plain data
    for dotted, value in pairs:
        node = result
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def allowed_keys() -> list[str]:
    """All dotted keys of the schema (``loss.params.*`` is free-form)."""
    return sorted(_schema_keys(Config, ""))


def _schema_keys(model: type[BaseModel], prefix: str) -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_schema_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _check_keys(values: dict[str, Any], model: type[BaseModel], prefix: str) -> None:
    """Fail on the first unknown key with a suggestion and the allowed keys of that section."""
    fields = model.model_fields
    for key, value in values.items():
        if key not in fields:
            allowed = sorted(fields)
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{hint}; allowed in "
                f"{prefix.rstrip('.') or 'the top level'}: {', '.join(allowed)}"
            )
        annotation = fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{prefix}{key}' must be a section (a mapping), got {value!r}")
            _check_keys(value, annotation, f"{prefix}{key}.")


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "config"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"invalid config value {location}: {first['msg']}{more}"
