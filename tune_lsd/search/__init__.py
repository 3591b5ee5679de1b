"""The search: a search space and settings -> a distributed Ray Tune search, tracked in MLflow.

    from tune_lsd.search import SearchSettings, run_search
    summary = run_search(SearchSettings(name="demo", space="lsd", num_samples=8))

- :mod:`~tune_lsd.search.settings`: :class:`SearchSettings` (saved as ``search.yaml``), the space.
- :mod:`~tune_lsd.search.runner`: :func:`run_search` / :func:`resume_search`, the Tuner.
- :mod:`~tune_lsd.search.ray_setup`: Ray started or joined, resources and storage checked.
- :mod:`~tune_lsd.search.searchers`: the Optuna sampler, the scheduler, resumable searchers.
- :mod:`~tune_lsd.search.callbacks`: progress lines, trial states, the trial count.
- :mod:`~tune_lsd.search.running`: the running search that restored callbacks and searchers read.
- :mod:`~tune_lsd.search.summary`: the search's state and printed summary.
- :mod:`~tune_lsd.search.champion`: the best trial's model registered as ``NAME-best@champion``.
- :mod:`~tune_lsd.search.lifecycle`: completion, ``prune``, ``sync``.
- :mod:`~tune_lsd.search.finalize`: ``tune-lsd finalize``, the final model as the champion.
- :mod:`~tune_lsd.search.extend`: ``--extend NAME``, more trials for a completed search.

Ray Tune pickles the searcher and the callbacks into a search's saved state under their
module paths; searches saved before this package existed name them ``tune_lsd.search.X``.
They are imported here, so those names still resolve and such a search still resumes
(tests/search/test_resume_saved_state.py).
"""

from tune_lsd.search.callbacks import ProgressCallback, TrialCountCallback, TrialStateCallback
from tune_lsd.search.extend import extend_search
from tune_lsd.search.finalize import finalize_search
from tune_lsd.search.lifecycle import completion_record, prune_checkpoints, prune_search, sync_search
from tune_lsd.search.runner import resume_search, run_search
from tune_lsd.search.searchers import ResumableOptunaSearch, TrialCountedSearch, optuna_sampler, tune_config
from tune_lsd.search.settings import SearchError, SearchSettings, load_settings, prepare_space

__all__ = [
    "ProgressCallback",
    "ResumableOptunaSearch",
    "SearchError",
    "SearchSettings",
    "TrialCountCallback",
    "TrialCountedSearch",
    "TrialStateCallback",
    "completion_record",
    "extend_search",
    "finalize_search",
    "load_settings",
    "optuna_sampler",
    "prepare_space",
    "prune_checkpoints",
    "prune_search",
    "resume_search",
    "run_search",
    "sync_search",
    "tune_config",
]
