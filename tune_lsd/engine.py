"""The one training loop: build everything from a Config, train an epoch, evaluate.

Both the ``tune-lsd train`` command and the Ray trainables drive a :class:`Trainer`:

    trainer = Trainer(config)
    for _ in range(config.schedule.epochs):
        metrics = trainer.run_epoch()      # train one epoch + validation metrics
    test = trainer.evaluate("test")

Reproducibility: every epoch starts by reseeding Python, NumPy and torch from
``(config.seed, epoch)``, so the sampler and augmentation of epoch e do not depend on what
ran before; a checkpoint (:meth:`Trainer.state_dict`) therefore resumes exactly.
This module knows nothing of Ray or MLflow. It is longer than the others on purpose: the
loop is one idea, best read top to bottom in one sitting (as nanoGPT's).
"""

from __future__ import annotations

import gc
import math
import random
import time
import warnings
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tune_lsd.config import Config, ConfigError
from tune_lsd.data.datasets import LabelledImages
from tune_lsd.data.sampler import class_balanced_batches
from tune_lsd.data.splits import DataSplits, build_splits
from tune_lsd.data.transforms import center_crop, normalise, random_resized_crop, resize, resolve_augment
from tune_lsd.errors import TuneLsdError
from tune_lsd.losses.base import build_base_loss
from tune_lsd.losses.lsd import build_teacher, ema_horizon_warning, listwise_kl, lsd_weight
from tune_lsd.metrics import retrieval_metrics
from tune_lsd.models import build_model


def save_file(obj: Any, path) -> None:
    """``torch.save`` (checkpoints and models)."""
    torch.save(obj, path)


class CheckpointError(TuneLsdError, ValueError):
    """A file is missing or is not a tune_lsd checkpoint or model file (message is one line)."""


def load_file(path) -> Any:
    """A file written by :func:`save_file` or :meth:`Trainer.save`, tensors on the CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"file not found: {path}") from None
    except Exception as error:  # torch raises many types for a file that is not its own
        raise CheckpointError(f"{path} is not a tune_lsd checkpoint or model file ({type(error).__name__})") from None


def load_model_state(path) -> dict[str, Any]:
    """A checkpoint (:meth:`Trainer.save`) or model file (a trial's ``model.pt``): a dict with
    at least the config and the student's weights; CheckpointError otherwise."""
    state = load_file(path)
    if not isinstance(state, dict) or not {"config", "student"} <= state.keys():
        raise CheckpointError(
            f"{path} is not a tune_lsd checkpoint or model file (no config and student weights in it)"
        )
    return state


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def device_bytes_allocated() -> int:
    """Bytes of live tensors on this process's GPU (0 without CUDA)."""
    return torch.cuda.memory_allocated() if _cuda_in_use() else 0


def release_device_memory(baseline: int = 0, compiled: bool = False) -> None:
    """After a run's objects are dropped: collect them and return cached GPU blocks (and
    cuBLAS workspaces, which would count as allocated) to the driver. Compiled graphs can keep
    a model's tensors alive: when ``compiled`` and memory is still above ``baseline``, the
    compilation caches are reset too."""
    gc.collect()
    if not _cuda_in_use():
        return
    torch._C._cuda_clearCublasWorkspaces()
    torch.cuda.empty_cache()
    if compiled and device_bytes_allocated() > baseline:
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()


class NonFiniteLossError(TuneLsdError, FloatingPointError):
    """The training loss became NaN or inf (message is one line)."""


def seed_everything(seed: int | list[int]) -> None:
    """Seed Python, NumPy's global RNG (used by the m-per-class sampler) and torch."""
    sequence = np.random.SeedSequence(seed)
    value = int(sequence.generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("runtime.device=cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


class Trainer:
    """Student, teacher, losses, optimiser and data of one run, and the loop over them."""

    def __init__(self, config: Config, splits: DataSplits | None = None) -> None:
        self.config = config
        if config.runtime.threads:
            torch.set_num_threads(config.runtime.threads)
        seed_everything(config.seed)
        self.device = pick_device(config.runtime.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = config.runtime.cudnn_benchmark
        self.use_amp = self.device.type == "cuda" and config.runtime.amp
        self.splits = splits or build_splits(config.data, config.seed)
        train = self.splits.train

        self.model = build_model(config.model, in_chans=self.splits.channels).to(self.device)
        if self.use_amp:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.base_loss = build_base_loss(config.loss, train.num_classes, config.model.embedding_dim)
        self.base_loss.loss.to(self.device)
        self.teacher = build_teacher(config.lsd, self.model)
        self.optimizer = self._build_optimizer()
        if config.runtime.compile:  # after the teacher's copy of the student: each is compiled on its own
            self.model.compile()
            if self.teacher is not None:
                self.teacher.compile()

        self.steps_per_epoch = config.schedule.steps_per_epoch or max(1, len(train) // config.data.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.augment = resolve_augment(config.data.augment, config.data.dataset)
        self.epoch = 0  # epochs completed
        self._on_device: dict[int, torch.Tensor] = {}  # id(split) -> its images on the GPU
        self._zero = torch.zeros((), device=self.device)  # the LSD loss of a step without teacher
        self.history: list[dict[str, float]] = []

        if config.lsd.enabled and config.lsd.teacher == "ema":
            warning = ema_horizon_warning(config.lsd.ema_momentum, self.steps_per_epoch * config.schedule.epochs)
            if warning:
                warnings.warn(warning, stacklevel=2)

    # --- building blocks ------------------------------------------------------------------

    def _build_optimizer(self) -> torch.optim.Optimizer:
        optim = self.config.optim
        groups = [{"params": list(self.model.parameters()), "lr": optim.lr}]
        loss_params = self.base_loss.parameters()
        if loss_params:
            groups.append({"params": loss_params, "lr": optim.lr * self.config.loss.proxy_lr_multiplier})
        if optim.name == "sgd":
            return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
        optimizer_class = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
        return optimizer_class(groups, lr=optim.lr, weight_decay=optim.weight_decay)

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up, then constant or cosine decay to 0, per optimiser step."""
        schedule = self.config.schedule
        warmup = schedule.warmup_epochs * self.steps_per_epoch
        total = schedule.epochs * self.steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        if schedule.lr_schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.use_amp else nullcontext()

    def _channels_last(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.contiguous(memory_format=torch.channels_last) if self.use_amp else batch

    # --- training -------------------------------------------------------------------------

    def train_epoch(self) -> dict[str, float]:
        """One epoch of m-per-class batches; returns mean losses, LSD weight and throughput.

        The step loop never waits for the device: losses are summed there and read on the host
        only every ``runtime.sync_every`` steps (the NaN/inf check and the progress bar) and at
        the end of the epoch. A sum that is not finite means some step's loss was not.
        """
        config = self.config
        seed_everything([config.seed, self.epoch])
        generator = torch.Generator().manual_seed(config.seed * 100_003 + self.epoch)
        train = self.splits.train
        batches = np.stack(
            class_balanced_batches(
                train.labels, config.data.samples_per_class, config.data.batch_size, self.steps_per_epoch
            )
        )
        weight = lsd_weight(config.lsd, self.epoch, config.schedule.epochs)
        need_teacher = self.teacher is not None and (weight > 0 or config.lsd.ramp == "none")
        self.model.train()
        labels = torch.from_numpy(train.labels[batches]).to(self.device)  # one copy per epoch
        resident = self._resident_images(train)
        index = torch.from_numpy(batches).to(self.device) if resident is not None else None
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, base loss, lsd loss
        started = time.perf_counter()
        progress = tqdm(
            total=len(batches),
            desc=f"epoch {self.epoch + 1}/{config.schedule.epochs}",
            leave=False,
            disable=None if config.runtime.progress else True,
            unit="batch",
        )  # None: off when not a TTY
        for step in range(len(batches)):
            images = (
                resident[index[step]]
                if resident is not None and index is not None
                else self._host_batch(train.images[batches[step]])
            )
            loss, base, lsd = self._train_step(images, labels[step], generator, weight, need_teacher)
            sums.add_(torch.stack([loss.detach(), base.detach(), lsd.detach()]))  # float32 into float64
            if (step + 1) % config.runtime.sync_every == 0 or step + 1 == len(batches):
                loss_sum = self._check_finite(sums, step + 1, len(batches))
                progress.update(step + 1 - progress.n)
                progress.set_postfix(loss=f"{loss_sum / (step + 1):.4f}")
        progress.close()
        mean_loss, mean_base, mean_lsd = (sums / len(batches)).tolist()
        elapsed = time.perf_counter() - started
        if self.teacher is not None:
            self.teacher.after_epoch(self.model)
        self.epoch += 1
        return {
            "train/loss": mean_loss,
            "train/base_loss": mean_base,
            "lsd/loss": mean_lsd,
            "lsd/weight": weight,
            "train/lr": self.optimizer.param_groups[0]["lr"],
            "train/images_per_s": len(batches) * config.data.batch_size / elapsed,
            "train/epoch_s": elapsed,
        }

    def _train_step(
        self,
        images_uint8: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator,
        weight: float,
        need_teacher: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimiser step; returns (loss, base loss, LSD loss) as device tensors, unread."""
        images = self._augment(self._channels_last(normalise(images_uint8)), generator)
        with self._autocast():
            embeddings = self.model(images)
            teacher_embeddings = self.teacher.embed(images) if need_teacher and self.teacher is not None else None
        base = self.base_loss(embeddings, labels)
        lsd = (
            listwise_kl(embeddings, teacher_embeddings, self.config.lsd.temperature)
            if teacher_embeddings is not None
            else self._zero
        )
        loss = base + weight * lsd
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.teacher is not None:
            self.teacher.after_step(self.model)
        return loss, base, lsd

    def _check_finite(self, sums: torch.Tensor, steps_done: int, steps: int) -> float:
        """The running loss sum, read on the host (the one sync of every ``sync_every`` steps);
        NonFiniteLossError when it is NaN or inf."""
        loss_sum, base_sum, lsd_sum = sums.tolist()
        if math.isfinite(loss_sum):
            return loss_sum
        first = steps_done - (steps_done - 1) % self.config.runtime.sync_every
        parts = ", ".join(
            f"{name} {'finite' if math.isfinite(v) else v}"
            for name, v in (("base loss", base_sum), ("lsd loss", lsd_sum))
        )
        raise NonFiniteLossError(
            f"training loss is {loss_sum} at epoch {self.epoch + 1} (in steps {first}-{steps_done} of {steps}; "
            f"{parts}): lower optim.lr or lsd.weight"
        )

    def _resident_images(self, data: LabelledImages) -> torch.Tensor | None:
        """The split's uint8 images on the GPU (copied once per Trainer) when they fit in
        ``runtime.device_data_mb``; None on the CPU or when too large."""
        if self.device.type != "cuda" or data.images.nbytes > self.config.runtime.device_data_mb * 2**20:
            return None
        if id(data) not in self._on_device:
            with warnings.catch_warnings():  # arrays from Ray's object store are read-only; nothing writes them
                warnings.simplefilter("ignore", UserWarning)
                self._on_device[id(data)] = torch.from_numpy(data.images).to(self.device)
        return self._on_device[id(data)]

    def _host_batch(self, images: np.ndarray) -> torch.Tensor:
        """A batch gathered on the host, copied to the device from pinned memory without blocking."""
        batch = torch.from_numpy(images)
        return batch.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else batch

    def _augment(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        size = self.config.data.image_size
        if self.augment == "none":
            return resize(batch, size)
        scale = (self.config.data.crop_scale_min, 1.0)
        return random_resized_crop(batch, size, scale=scale, flip=self.augment == "crop_flip", generator=generator)

    # --- evaluation -----------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, data: LabelledImages) -> torch.Tensor:
        """Embeddings (float32, on the training device) of every image, in eval mode: the centre
        crop ``data.eval_crop`` of each image, resized to ``data.image_size``."""
        self.model.eval()
        size, batch_size = self.config.data.image_size, self.config.eval.batch_size
        resident = self._resident_images(data)
        chunks = []
        for start in range(0, len(data), batch_size):
            stop = start + batch_size
            images = resident[start:stop] if resident is not None else self._host_batch(data.images[start:stop])
            batch = resize(center_crop(self._channels_last(normalise(images)), self.config.data.eval_crop), size)
            with self._autocast():
                chunks.append(self.model(batch).float())
        return torch.cat(chunks)

    def evaluate(self, split: str) -> dict[str, float]:
        """Retrieval metrics of ``split`` ("val" or "test"), keys prefixed ``split/``.

        Neighbours are searched where the embeddings are: on the GPU by torch, on the CPU by faiss.
        A split with query/gallery roles (In-Shop's test set) is evaluated query -> gallery.
        """
        data = getattr(self.splits, split)
        if data is None:
            raise ConfigError(f"this run has no {split} split (data.final=true has no validation classes)")
        started = time.perf_counter()
        embeddings, config = self.embed(data), self.config.eval
        if data.is_query is None:  # each image a query against all the others
            metrics = retrieval_metrics(embeddings, data.labels, config.ks, nmi=config.nmi, seed=self.config.seed)
        else:  # In-Shop: query images against gallery images
            query = torch.from_numpy(data.is_query).to(embeddings.device)
            metrics = retrieval_metrics(
                embeddings[query],
                data.labels[data.is_query],
                config.ks,
                nmi=config.nmi,
                seed=self.config.seed,
                gallery=embeddings[~query],
                gallery_labels=data.labels[~data.is_query],
            )
        result = {f"{split}/{name}": value for name, value in metrics.items()}
        result[f"{split}/eval_s"] = time.perf_counter() - started
        return result

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, evaluate the validation classes (if any); append to history."""
        metrics: dict[str, Any] = self.train_epoch()
        if self.splits.val is not None:
            metrics.update(self.evaluate("val"))
        metrics["epoch"] = self.epoch
        self.history.append(metrics)
        return metrics

    # --- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (RNG is reseeded per epoch, see module doc)."""
        return {
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "student": self.model.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "loss": self.base_loss.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a full checkpoint, or only the student from a model file (no optimiser).

        Hyperparameters stay those of this Trainer's config: after the optimiser state is
        loaded, its learning rates and weight decay are set from the config again (so PBT's
        mutated values take effect on the restored state).
        """
        self.model.load_state_dict(state["student"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        if "optimizer" not in state:
            return
        if self.teacher is not None and state["teacher"] is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.base_loss.loss.load_state_dict(state["loss"])
        base_lrs = list(self.scheduler.base_lrs)  # from this config
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scheduler.base_lrs = base_lrs
        factor = self._lr_factor(self.scheduler.last_epoch)
        for group, base_lr in zip(self.optimizer.param_groups, base_lrs):
            group["initial_lr"] = base_lr
            group["lr"] = base_lr * factor
            group["weight_decay"] = self.config.optim.weight_decay

    def save(self, path) -> None:
        torch.save(self.state_dict(), path)

    @classmethod
    def from_checkpoint(cls, path, splits: DataSplits | None = None, overrides: dict | None = None) -> Trainer:
        """Rebuild a Trainer from a checkpoint file written by :meth:`save`."""
        state = load_model_state(path)
        config = Config.from_dict(state["config"])
        if overrides:
            config = config.with_overrides(overrides)
        trainer = cls(config, splits=splits)
        trainer.load_state_dict(state)
        return trainer
