"""Ray Tune's traceback about deleting a checkpoint that a killed driver had already deleted.

Ray Tune keeps ``num_to_keep`` checkpoints of a trial and deletes the others as new ones are
registered, but saves its experiment state only every few seconds. A driver killed in
between leaves a state that still lists a checkpoint it had deleted; after ``--resume`` Ray
tries to delete it again when the trial registers its next checkpoint, and logs a traceback
(``Error handling checkpoint ... FileNotFoundError``) although nothing is wrong: Ray updated
its list of checkpoints before deleting, and the new checkpoint counts. :func:`quiet_stale_deletions`
drops that record, and only that one.
"""

from __future__ import annotations

import logging
import traceback

RAY_CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"
RAY_DELETE = "_delete_fs_path"  # ray.train._internal.storage: how Ray deletes a checkpoint


class StaleCheckpointDeletion(logging.Filter):
    """Drops Ray's log record of a FileNotFoundError raised while deleting an old checkpoint."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, FileNotFoundError) or "Error handling checkpoint" not in str(record.msg):
            return True
        return not any(frame.name == RAY_DELETE for frame in traceback.extract_tb(error.__traceback__))


def quiet_stale_deletions() -> None:
    """Install the filter on Ray Tune's controller logger (once per process)."""
    logger = logging.getLogger(RAY_CONTROLLER_LOGGER)
    if not any(isinstance(f, StaleCheckpointDeletion) for f in logger.filters):
        logger.addFilter(StaleCheckpointDeletion())
