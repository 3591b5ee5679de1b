"""MLflow tracking of searches: one experiment per search name, a parent run per search, a
nested child run per trial, each trial's best checkpoint as an artifact, the search's best
model in the model registry. All MLflow calls of tune_lsd live in this package; it knows no
search (the search runner calls it).

- :mod:`~tune_lsd.tracking.names`: tags, artifact names, metric keys.
- :mod:`~tune_lsd.tracking.store`: the tracking URI, its checks, retries, the search's context.
- :mod:`~tune_lsd.tracking.runs`: the write side (parent and trial runs created and ended).
- :mod:`~tune_lsd.tracking.queries`: the read side (trials, best trial, curves, files).
- :mod:`~tune_lsd.tracking.spool` + :mod:`~tune_lsd.tracking.delivery`: records written to
  disk first and delivered by a background thread, so a server that is down never slows
  training (``tune-lsd sync`` delivers what it missed).
- :mod:`~tune_lsd.tracking.model_log`: the best model as an MLflow pyfunc model.
- :mod:`~tune_lsd.tracking.retention`: only the best trials' models kept (``--keep-models``).
- :mod:`~tune_lsd.tracking.server`: ``tune-lsd server`` and its authentication.
- :mod:`~tune_lsd.tracking.comparisons`: ``tune-lsd compare``'s parent run and retrain runs.
"""

from tune_lsd.tracking.comparisons import end_comparison_run, log_retrain_run, start_comparison_run
from tune_lsd.tracking.delivery import (
    CLOSE_TIMEOUT_S,
    SEARCH_SPOOL,
    SearchRecorder,
    TrialTracker,
    deliver_records,
    deliver_spools,
    remove_if_empty,
    search_recorder,
    spooled_records,
)
from tune_lsd.tracking.model_log import load_embedding_model, log_best_model
from tune_lsd.tracking.names import (
    CHECKPOINT_DIR,
    ERROR_TAG,
    MODEL_DIR,
    MODEL_FILE,
    MODEL_METADATA_KEY,
    MODEL_TAG,
    NODES_TAG,
    PARENT_TAG,
    RAY_EXPERIMENT_TAG,
    SAMPLED_TAG,
    SEARCH_TAG,
    SPACE_ARTIFACT,
    STATE_TAG,
    TRIAL_ID_TAG,
    mlflow_key,
)
from tune_lsd.tracking.queries import (
    best_trial_run,
    download_trial_file,
    download_trial_model,
    find_trial_run,
    metric_history,
    search_context,
    search_parent_run,
    search_parent_runs,
    trial_runs,
)
from tune_lsd.tracking.retention import keep_best_models
from tune_lsd.tracking.runs import discard_lost_trial_runs, log_final_run, log_folder, log_search_text, start_search_run
from tune_lsd.tracking.server import artifact_store, auth_server_environment, server_command
from tune_lsd.tracking.store import (
    CREDENTIALS_HELP,
    TrackingContext,
    TrackingError,
    check_tracking_uri,
    client_credentials,
    default_tracking_uri,
    open_store,
    prefer_own_retries,
    retry,
)

__all__ = [
    "CHECKPOINT_DIR",
    "CLOSE_TIMEOUT_S",
    "CREDENTIALS_HELP",
    "ERROR_TAG",
    "MODEL_DIR",
    "MODEL_FILE",
    "MODEL_TAG",
    "MODEL_METADATA_KEY",
    "NODES_TAG",
    "PARENT_TAG",
    "RAY_EXPERIMENT_TAG",
    "SAMPLED_TAG",
    "SEARCH_SPOOL",
    "SEARCH_TAG",
    "SPACE_ARTIFACT",
    "STATE_TAG",
    "TRIAL_ID_TAG",
    "SearchRecorder",
    "TrackingContext",
    "TrackingError",
    "TrialTracker",
    "artifact_store",
    "auth_server_environment",
    "best_trial_run",
    "check_tracking_uri",
    "client_credentials",
    "default_tracking_uri",
    "deliver_records",
    "deliver_spools",
    "discard_lost_trial_runs",
    "end_comparison_run",
    "log_retrain_run",
    "start_comparison_run",
    "download_trial_file",
    "download_trial_model",
    "find_trial_run",
    "load_embedding_model",
    "keep_best_models",
    "log_best_model",
    "log_final_run",
    "log_folder",
    "log_search_text",
    "metric_history",
    "mlflow_key",
    "open_store",
    "prefer_own_retries",
    "remove_if_empty",
    "retry",
    "search_context",
    "search_parent_run",
    "search_parent_runs",
    "search_recorder",
    "server_command",
    "spooled_records",
    "start_search_run",
    "trial_runs",
]
