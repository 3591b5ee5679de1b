"""A search's report and the list of searches, read from what MLflow recorded.

- :mod:`~tune_lsd.report.page`: :func:`write_report`, the self-contained HTML page.
- :mod:`~tune_lsd.report.plots`: its PNG plots (learning curves, Optuna's plots).
- :mod:`~tune_lsd.report.trials`: the trials of a search as MLflow recorded them, as an
  Optuna study, and :func:`list_searches` (`tune-lsd ls`).
"""

from tune_lsd.report.page import write_report
from tune_lsd.report.trials import TrialSummary, list_searches, load_trials, optuna_study

__all__ = ["TrialSummary", "list_searches", "load_trials", "optuna_study", "write_report"]
