"""GPU benchmarks: does the GPU spend its time training?

(a) engine  - the engine's training step against a minimal plain PyTorch loop on GPU-resident
              data (ResNet-50, 224 px, batch 112, bf16 autocast, channels_last), base loss and
              LSD (EMA teacher); target >= 0.98x. Also: what the base loss (pytorch-metric-
              learning's multi-similarity loss + miner) costs per step against a trivial loss,
              and `runtime.compile` (torch.compile of student and teacher) with its warm-up.
(b) search  - the demo search (8 trials x 5 epochs, 4 trials at 0.25 GPU): wall time, the gaps
              between a trial's end and the next trial's first epoch, GPU busy % sampled with
              nvidia-smi; targets: wall <= 20 s on an H100/H200 and gaps <= 3 s.
(c) eval    - retrieval metrics of 60,000 x 512 embeddings in 11,000 classes: chunked torch
              top-k on the GPU against faiss-cpu on all cores; target >= 50x, same metrics.
(d) preset  - the `cub` preset's search (ResNet-50, 224 px) on a synthetic tree of CUB's size
              and shapes, 8 trials, 4 at a time on one GPU: wall time, epochs, GPU busy % while
              trials train (target >= 80 %), the first epoch's start after the command's; twice,
              the second search with the data in the decode cache.

Without a CUDA GPU it prints one line and does nothing (``--device cpu --tiny`` runs every
part at toy sizes on the CPU, to check the script itself).

    python benchmarks/gpu.py [--parts engine,eval,search,preset] [--out DIR] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tune_lsd.config import Config
from tune_lsd.data.datasets import LabelledImages
from tune_lsd.data.splits import DataSplits
from tune_lsd.engine import Trainer
from tune_lsd.errors import first_line
from tune_lsd.losses.base import build_base_loss
from tune_lsd.metrics import retrieval_metrics
from tune_lsd.models import build_model

PAPER = {"backbone": "resnet50", "image_size": 224, "batch_size": 112, "samples_per_class": 2, "classes": 560}
TINY = {"backbone": "resnet10t", "image_size": 32, "batch_size": 32, "samples_per_class": 2, "classes": 40}


def synthetic_splits(size: dict, seed: int = 0) -> DataSplits:
    """Random uint8 images (already at the training size, so no resize), 4 per class."""
    rng = np.random.default_rng(seed)
    n = size["classes"] * 4
    images = rng.integers(0, 256, size=(n, size["image_size"], size["image_size"], 3), dtype=np.uint8)
    labels = np.repeat(np.arange(size["classes"]), 4)
    data = LabelledImages(images, labels)
    return DataSplits(train=data, val=None, test=data)


def engine_config(size: dict, lsd: bool, compile_: bool, device: str) -> Config:
    return Config().with_overrides(
        {
            "data.image_size": size["image_size"],
            "data.batch_size": size["batch_size"],
            "data.samples_per_class": size["samples_per_class"],
            "data.augment": "none",
            "model.backbone": size["backbone"],
            "model.small_input_stem": size["image_size"] < 64,
            "lsd.enabled": lsd,
            "lsd.teacher": "ema",
            "lsd.ramp": "constant",
            "lsd.ema_momentum": 0.99,
            "schedule.epochs": 1000,
            "schedule.lr_schedule": "constant",
            "optim.lr": 1e-5,
            "runtime.device": device,
            "runtime.progress": False,
            "runtime.compile": compile_,
            "eval.nmi": False,
            "runtime.cudnn_benchmark": True,
        }
    )  # as the plain loop (long runs of one shape)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def engine_images_per_s(size: dict, lsd: bool, steps: int, device: str, compile_: bool = False) -> tuple[float, float]:
    """(images/s of the engine's steady epochs, seconds of its first epoch: warm-up / compilation)."""
    config = engine_config(size, lsd, compile_, device).with_overrides({"schedule.steps_per_epoch": steps})
    trainer = Trainer(config, splits=synthetic_splits(size))
    first = trainer.train_epoch()["train/epoch_s"]
    rates = [trainer.train_epoch()["train/images_per_s"] for _ in range(2)]
    return max(rates), first


def plain_images_per_s(size: dict, lsd: bool, steps: int, device: str, loss: str = "multi_similarity") -> float:
    """A minimal training loop: GPU-resident normalised images, model, loss, Adam; nothing else."""
    from timm.utils import ModelEmaV3

    device_ = torch.device(device)
    amp = device_.type == "cuda"
    config = engine_config(size, lsd, False, device)
    model = build_model(config.model, in_chans=3).to(device_)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    teacher = ModelEmaV3(model, decay=0.99)  # used when lsd
    base_loss = build_base_loss(config.loss, size["classes"], 128)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    splits = synthetic_splits(size)
    pool = torch.from_numpy(splits.train.images).to(device_).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    if amp:
        pool = pool.contiguous(memory_format=torch.channels_last)
    labels_pool = torch.from_numpy(splits.train.labels).to(device_)
    per_class, batch = size["samples_per_class"], size["batch_size"]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp)

    def step() -> None:
        classes = torch.randperm(size["classes"], device=device_)[: batch // per_class]
        index = (classes[:, None] * 4 + torch.arange(per_class, device=device_)).flatten()
        images, labels = pool[index], labels_pool[index]
        with autocast:
            embeddings = model(images)
            with torch.no_grad():
                teacher_embeddings = teacher.module(images)
        if loss == "trivial":
            value = embeddings.float().pow(2).sum(1).mean()
        else:
            value = base_loss(embeddings, labels)
        if lsd:
            tau = 1.0
            student = F.log_softmax(embeddings.float() @ embeddings.float().T / tau, dim=1)
            target = F.softmax(teacher_embeddings.float() @ teacher_embeddings.float().T / tau, dim=1)
            value = value + 10.0 * tau**2 * F.kl_div(student, target, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if lsd:
            teacher.update(model)

    model.train()
    if teacher is not None:
        teacher.module.train()
    for _ in range(5):
        step()
    synchronize(device_)
    rates = []
    for _ in range(2):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device_)
        rates.append(steps * batch / (time.perf_counter() - started))
    return max(rates)


def part_engine(args, size: dict) -> dict:
    results: dict[str, dict[str, Any]] = {}
    for lsd in (False, True):
        name = "LSD (EMA teacher)" if lsd else "base loss"
        plain = plain_images_per_s(size, lsd, args.steps, args.device)
        engine, _ = engine_images_per_s(size, lsd, args.steps, args.device)
        results[name] = {"plain_img_s": plain, "engine_img_s": engine, "ratio": engine / plain}
        print(f"  engine {name}: {engine:,.0f} img/s vs plain loop {plain:,.0f} -> {engine / plain:.3f}x", flush=True)
    trivial = plain_images_per_s(size, False, args.steps, args.device, loss="trivial")
    with_loss = results["base loss"]["plain_img_s"]
    batch = size["batch_size"]
    results["base loss cost"] = {
        "trivial_img_s": trivial,
        "multi_similarity_img_s": with_loss,
        "ms_per_step": 1000 * batch * (1 / with_loss - 1 / trivial),
    }
    print(
        f"  plain loop, trivial loss {trivial:,.0f} img/s vs multi-similarity + miner {with_loss:,.0f}: "
        f"the base loss costs {results['base loss cost']['ms_per_step']:.1f} ms per step",
        flush=True,
    )
    if not args.no_compile:
        started = time.perf_counter()
        try:
            compiled, warmup = engine_images_per_s(size, True, args.steps, args.device, compile_=True)
        except Exception as error:  # a machine without a working compiler toolchain
            results["compile"] = {"error": first_line(error)}
            print(f"  runtime.compile failed: {results['compile']['error']}", flush=True)
            return results
        eager = results["LSD (EMA teacher)"]["engine_img_s"]
        results["compile"] = {
            "eager_img_s": eager,
            "compiled_img_s": compiled,
            "speedup": compiled / eager,
            "first_epoch_s": warmup,
            "total_s": time.perf_counter() - started,
        }
        print(
            f"  runtime.compile, LSD: {compiled:,.0f} img/s vs eager {eager:,.0f} -> {compiled / eager:.2f}x; "
            f"first epoch ({args.steps} steps, compilation included) {warmup:.1f} s",
            flush=True,
        )
    return results


def part_eval(args) -> dict:
    n, dim, classes = (60_000, 512, 11_000) if not args.tiny else (3_000, 64, 550)
    generator = torch.Generator().manual_seed(0)
    labels = torch.randperm(n, generator=generator) % classes
    centres = torch.randn(classes, dim, generator=generator)
    embeddings = F.normalize(
        centres[labels] + 2.2 * torch.randn(n, dim, generator=generator), dim=1
    )  # R@1 ~0.9: not trivial
    label_array = labels.numpy()
    device = torch.device(args.device)
    on_device = embeddings.to(device)
    retrieval_metrics(on_device[:2000], label_array[:2000], nmi=False, backend="torch")  # CUDA/cuBLAS warm-up
    synchronize(device)
    started = time.perf_counter()
    by_torch = retrieval_metrics(on_device, label_array, nmi=False, backend="torch", memory_budget_mb=2048)
    torch_s = time.perf_counter() - started
    started = time.perf_counter()
    by_faiss = retrieval_metrics(embeddings.numpy(), label_array, nmi=False, backend="faiss")
    faiss_s = time.perf_counter() - started
    difference = max(abs(by_torch[k] - by_faiss[k]) for k in by_faiss)
    print(
        f"  {n:,} x {dim} in {classes:,} classes: torch on {device.type} {torch_s:.2f} s, faiss-cpu "
        f"({os.cpu_count()} cores) {faiss_s:.2f} s -> {faiss_s / torch_s:.0f}x; largest metric difference "
        f"{difference:.1e}; Recall@1 {by_torch['recall@1']:.4f}",
        flush=True,
    )
    return {
        "n": n,
        "dim": dim,
        "classes": classes,
        "torch_s": torch_s,
        "faiss_s": faiss_s,
        "speedup": faiss_s / torch_s,
        "max_metric_difference": difference,
        "metrics": by_torch,
    }


def part_search(args, out: Path) -> dict:
    """The demo search on the GPU (the `lsd` space on the bundled glyphs)."""
    options = ["--space", "lsd", "--cpus-per-trial", "1" if args.tiny else "2"]
    if args.tiny:
        options += ["--set", "data.max_classes=40", "--set", "schedule.steps_per_epoch=2", "--set", "schedule.epochs=2"]
    return timed_search(args, out, "search", options)


def part_preset(args, out: Path) -> dict:
    """The `cub` preset's search (ResNet-50, 224 px, batch 112, the epoch teacher) on a synthetic
    tree of CUB's size and shapes (200 classes, 11,788 JPEGs, the longer side 500 px), with
    random initial weights (the machine is offline) and ``--preset-epochs`` epochs a trial."""
    with tempfile.TemporaryDirectory(prefix="preset_") as tmp:
        tree = Path(tmp) / "CUB_200_2011"
        classes, images, long_side = (20, 120, 64) if args.tiny else (200, 11_788, 500)
        started = time.perf_counter()
        write_cub_tree(tree, classes, images, long_side)
        print(
            f"  tree: {images:,} JPEGs in {classes} classes, longer side {long_side} px "
            f"({sum(f.stat().st_size for f in tree.rglob('*.jpg')) / 1e6:,.0f} MB, "
            f"{time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        epochs = 2 if args.tiny else args.preset_epochs
        options = [
            "--space",
            "cub",
            "--cpus-per-trial",
            "1" if args.tiny else "3",
            "--set",
            f"data.root={tree}",
            "--set",
            "model.pretrained=none",
            "--set",
            f"schedule.epochs={epochs}",
        ]
        if args.tiny:
            options += [
                "--set",
                "model.backbone=resnet10t",
                "--set",
                "data.image_size=32",
                "--set",
                "data.load_size=40",
                "--set",
                "data.batch_size=16",
                "--set",
                "schedule.steps_per_epoch=2",
            ]
        env = {"TUNE_LSD_CACHE": str(Path(tmp) / "cache")}
        print("  a search with an empty decode cache:", flush=True)
        cold = timed_search(args, out, "preset", options, env=env)
        entries = [json.loads(f.read_text()) for f in (Path(tmp) / "cache").rglob("entry.json")]
        cold["decode_s"] = {
            entry["description"]: entry["decode_seconds"]
            for entry in sorted(entries, key=lambda entry: entry["description"])
        }
        print(f"  decoding into the cache (seconds): {cold['decode_s']}", flush=True)
        print("  the same search again, its data in the decode cache:", flush=True)
        return {"cold_cache": cold, "warm_cache": timed_search(args, out, "preset-cached", options, env=env)}


def write_cub_tree(root: Path, classes: int, images: int, long_side: int, seed: int = 0) -> None:
    """CUB's folder layout (images/NNN.Name/*.jpg); each image's aspect ratio drawn between
    3:4 and 16:9, landscape four times in five, as CUB's photos mostly are."""
    from decode_cache import photo_like

    def write(index: int) -> None:
        rng = np.random.default_rng([seed, index])
        aspect = rng.uniform(1.0, 16 / 9) if rng.random() < 0.8 else rng.uniform(3 / 4, 1.0)
        width, height = (
            (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
        )
        label = index % classes + 1
        path = root / "images" / f"{label:03d}.Bird_{label}" / f"{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo_like(rng, width, height).save(path, quality=90)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(write, range(images)))


def timed_search(args, out: Path, name: str, options: list[str], env: dict[str, str] | None = None) -> dict:
    """``tune-lsd search`` with 4 trials at a time (0.25 GPU each), nvidia-smi sampling the GPU,
    in a temporary runs folder: wall time, each trial's timeline, gaps, GPU busy %."""
    gpu = args.device == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sampler = None
        if gpu:
            sampler = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=timestamp,utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=open(folder / "smi.csv", "w"),
                stderr=subprocess.DEVNULL,
            )
        command = [
            sys.executable,
            "-m",
            "tune_lsd.cli",
            "search",
            "--name",
            name,
            "--num-samples",
            str(args.trials),
            "--max-concurrent",
            "4",
            "--gpus-per-trial",
            "0.25" if gpu else "0",
            *options,
        ]
        started = time.time()
        lines = stamped_output(command, folder, {"RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1", **(env or {})})
        ended = time.time()
        if sampler is not None:
            sampler.terminate()
            sampler.wait()
        (out / f"{name}.log").write_text("".join(f"[{at - started:6.1f} s] {line}\n" for at, line in lines))
        if lines[-1][1] != "exit 0":
            print(f"  search failed ({lines[-1][1]}); log in {out / f'{name}.log'}")
            return {"error": "\n".join(line for _, line in lines[-20:])}
        trials = trial_timelines(folder / "runs" / "ray" / name)
        busy = gpu_busy(folder / "smi.csv", trials) if gpu else None
        checkpoint_mb = sum(f.stat().st_size for f in (folder / "runs" / "ray").rglob("*") if f.is_file()) / 2**20
    summary_line = next((line for _, line in lines if "epochs in" in line), "")
    dataset_line = next((line for _, line in lines if line.startswith("dataset:")), "")
    # When the command printed its phases: the data listed, Ray started + data decoded + store opened.
    phases = {
        phase: round(next((at for at, line in lines if marker(line)), ended) - started, 1)
        for phase, marker in (
            ("listed_s", lambda line: line.startswith("dataset:")),
            ("ray_and_data_ready_s", lambda line: line.startswith(f"search {name!r}: space")),
            ("first_trial_started_s", lambda line: "started (1/" in line),
        )
    }
    first_start = min(t["first_start"] for t in trials)
    last_end = max(t["end"] for t in trials)
    gaps = slot_gaps(trials, concurrency=most_at_once(trials))
    report = {
        "command_s": ended - started,
        "first_epoch_after_s": first_start - started,
        "trials_s": last_end - first_start,
        "summary": summary_line.strip(),
        "dataset": dataset_line,
        "phases_after_command_s": phases,
        "gaps_s": gaps,
        "max_gap_s": max(gaps, default=0.0),
        "gpu_busy": busy,
        "ray_folder_mb": checkpoint_mb,
        "pids": len({t["pid"] for t in trials}),
        "trials": len(trials),
        "epochs": sum(len(t["epoch_s"]) for t in trials),
    }
    print(f"  {dataset_line}\n  {summary_line.strip()}\n  after the command's start: {phases}")
    print(
        f"  command {report['command_s']:.1f} s; the first epoch started {report['first_epoch_after_s']:.1f} s after "
        f"the command; first epoch start to last result {report['trials_s']:.1f} s; {len(trials)} trials, "
        f"{report['epochs']} epochs, on {report['pids']} actor processes; gaps between a trial's end and the "
        f"next's first epoch: max {report['max_gap_s']:.2f} s, mean {np.mean(gaps) if gaps else 0:.2f} s; "
        f"runs/ray left: {checkpoint_mb:.1f} MB",
        flush=True,
    )
    for trial in trials:
        print(
            f"    trial {trial['trial']} (pid {trial['pid']}): start {trial['start_s']}, epochs {trial['epoch_s']} s, "
            f"evaluations {trial['eval_s']} s"
        )
    report["timelines"] = trials
    if busy:
        print(
            f"  GPU busy: {busy['during_trials']:.0f} % while trials ran, {busy['whole_command']:.0f} % "
            f"over the whole command; peak memory {busy['peak_memory_mb']:.0f} MB",
            flush=True,
        )
    return report


def stamped_output(command: list[str], cwd: Path, env: dict[str, str]) -> list[tuple[float, str]]:
    """Run ``command``; each line of its output (stdout and stderr) with the time it came, and
    last ``exit N``."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env}
    )
    assert process.stdout is not None
    lines = [(time.time(), line.rstrip("\n")) for line in process.stdout]
    return lines + [(time.time(), f"exit {process.wait()}")]


def trial_timelines(experiment: Path) -> list[dict]:
    """Per trial: when its first epoch started, when its last result came, its process id."""
    trials = []
    for result_file in experiment.glob("*/result.json"):
        results = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        if not results:
            continue
        first, last = results[0], results[-1]
        trials.append(
            {
                "trial": first["trial_id"],
                "pid": first["pid"],
                "first_start": first["time/step_end_unix"] - first["time_this_iter_s"],
                "end": last["time/step_end_unix"],
                "start_s": {
                    key.removeprefix("time/"): round(first[key], 2)
                    for key in ("time/process_start_s", "time/import_s", "time/trainer_s", "time/setup_s")
                },
                "epoch_s": [round(r["train/epoch_s"], 2) for r in results],
                "eval_s": [round(r["val/eval_s"], 2) for r in results],
            }
        )
    return sorted(trials, key=lambda t: t["first_start"])


def most_at_once(trials: list[dict]) -> int:
    """The largest number of trials that were training at the same instant."""
    events = sorted([(t["first_start"], 1) for t in trials] + [(t["end"], -1) for t in trials])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def slot_gaps(trials: list[dict], concurrency: int) -> list[float]:
    """Idle time of a trial slot: each trial that started after the first ``concurrency`` took
    the slot of the earliest-ending trial not yet followed; the gap is between the two."""
    ends = sorted(t["end"] for t in trials)
    later_starts = [t["first_start"] for t in trials[concurrency:]]
    return [round(start - end, 3) for start, end in zip(later_starts, ends)]


def gpu_busy(samples_file: Path, trials: list[dict]) -> dict | None:
    from datetime import datetime

    rows = []
    for line in samples_file.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1].isdigit():
            stamp = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            rows.append((stamp, float(parts[1]), float(parts[2])))
    if not rows:
        return None
    start, end = min(t["first_start"] for t in trials), max(t["end"] for t in trials)
    during = [busy for stamp, busy, _ in rows if start <= stamp <= end] or [0.0]
    return {
        "during_trials": float(np.mean(during)),
        "whole_command": float(np.mean([r[1] for r in rows])),
        "peak_memory_mb": max(r[2] for r in rows),
        "samples": len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", default="engine,eval,search,preset", help="comma-separated: engine, eval, search, preset"
    )
    parser.add_argument("--steps", type=int, default=60, help="training steps per timed epoch")
    parser.add_argument("--trials", type=int, default=8, help="trials of the search and preset parts")
    parser.add_argument("--preset-epochs", type=int, default=5, help="epochs a trial of the preset part")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="toy sizes (to check the script on a CPU)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--out", default="benchmarks/results-gpu", help="folder for results.json and the search log")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "benchmarks/gpu.py: no CUDA GPU here, nothing measured (run it on a GPU machine; "
            "--device cpu --tiny checks the script at toy sizes)"
        )
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = TINY if args.tiny else PAPER
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    results = {"device": device_name, "torch": torch.__version__, "size": size, "steps": args.steps}
    print(f"benchmarks/gpu.py on {device_name}, torch {torch.__version__}", flush=True)
    torch.backends.cudnn.benchmark = True
    for part in args.parts.split(","):
        print(f"({part})", flush=True)
        if part == "engine":
            results["engine"] = part_engine(args, size)
        elif part == "eval":
            results["eval"] = part_eval(args)
        elif part == "search":
            results["search"] = part_search(args, out)
        elif part == "preset":
            results["preset"] = part_preset(args, out)
        else:
            raise SystemExit(f"unknown part {part!r}: use engine, eval, search, preset")
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"results in {out / 'results.json'}")
    print("ratio " + "; ".join(headline(results)))


def headline(results: dict) -> list[str]:
    """The last line: each part's ratio against its target."""
    parts = []
    if "engine" in results:
        engine = results["engine"]
        parts.append(
            f"engine/plain loop: base {engine['base loss']['ratio']:.3f}x, "
            f"LSD {engine['LSD (EMA teacher)']['ratio']:.3f}x (target >= 0.98x)"
        )
    if "eval" in results:
        parts.append(f"evaluation faiss-cpu/torch: {results['eval']['speedup']:.0f}x (target >= 50x)")
    if "search" in results and "error" not in results["search"]:
        search = results["search"]
        parts.append(
            f"search: {search['summary'].split(' in ')[-1]} of trials, max gap {search['max_gap_s']:.2f} s "
            "(targets <= 20 s, <= 3 s)"
        )
    for cache, preset in results.get("preset", {}).items():
        if "error" not in preset:
            busy = preset["gpu_busy"]["during_trials"] if preset["gpu_busy"] else float("nan")
            parts.append(
                f"cub preset search, {cache.replace('_', ' ')}: GPU busy {busy:.0f} % while trials ran "
                f"(target >= 80 %), first epoch {preset['first_epoch_after_s']:.0f} s after the start"
            )
    return parts


if __name__ == "__main__":
    main()
