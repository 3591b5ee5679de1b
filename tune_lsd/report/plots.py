"""The report's plots as PNG files: learning curves and Optuna's matplotlib plots (parallel
coordinates, parameter importance, slices)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.visualization import matplotlib as optuna_plots

from tune_lsd.report.trials import TrialSummary

HIGHLIGHTED = 5  # learning curves drawn in colour


def plot_curves(trials: list[TrialSummary], metric: str, path: Path) -> None:
    """Learning curves: the best trials in colour, the rest grey; early-stopped ones end in an x."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for rank, trial in reversed(list(enumerate(trials))):  # best drawn last, on top
        if not trial.curve:
            continue
        epochs, values = zip(*trial.curve)
        coloured = rank < HIGHLIGHTED
        axis.plot(
            epochs,
            values,
            marker="o",
            markersize=3,
            linewidth=2 if coloured else 1,
            color=f"C{rank}" if coloured else "0.7",
            label=f"#{rank + 1} {trial.name}" if coloured else None,
            zorder=3 if coloured else 2,
        )
        if trial.state == "stopped early":
            axis.plot(epochs[-1], values[-1], "x", color="black", markersize=7, zorder=4)
    axis.plot([], [], "x", color="black", label="stopped early")
    handles, labels = axis.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i])  # "#1 ...", "#2 ...", ..., "stopped early"
    axis.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8, loc="lower right")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel(metric)
    drawn = sum(bool(trial.curve) for trial in trials)
    which = f"{len(trials)} trials" if drawn == len(trials) else f"the best {drawn} of {len(trials)} trials"
    axis.set_title(f"learning curves ({which})")
    axis.grid(alpha=0.3)
    _save(figure, path)


def plot_optuna(kind: str, study: optuna.Study, metric: str, path: Path, params: list[str] | None = None) -> None:
    """One of Optuna's matplotlib plots: parallel coordinates, param importances or slices."""
    axis: Any  # Optuna returns one Axes, or an array of them (one per parameter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "parallel":
            axis = optuna_plots.plot_parallel_coordinate(study, target_name=metric)
        elif kind == "importance":
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # named, seeded: reports reproduce
            axis = optuna_plots.plot_param_importances(study, evaluator=evaluator, target_name=metric)
        else:
            axis = optuna_plots.plot_slice(study, params=params, target_name=metric)
    figure: Figure = (axis.flat[0] if hasattr(axis, "flat") else axis).figure
    figure.set_size_inches(6 * len(params) + 2 if params else 11, 5)
    # Optuna's figures carry colour bars that tight_layout cannot place: crop at save time instead.
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# --- the page --------------------------------------------------------------------------------
