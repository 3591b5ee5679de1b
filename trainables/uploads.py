"""A trial's checkpoint uploads while the search's storage does not answer.

Training goes on through an outage of the store: a checkpoint whose upload fails transiently
is dropped (Ray Tune takes a result without one) and the next checkpoint tries again. One
line in the trial's log says when the uploads stop working and one when they work again;
only uploads failing for longer than the storage's patience fail the trial, in one line. A
trial killed during an outage restarts from its last checkpoint that reached the store.
"""

from __future__ import annotations

import sys
import time

from tune_lsd.errors import first_line
from tune_lsd.storage import Location, StorageError, redacted


class UploadOutage:
    """Whether, and since when, a trial's checkpoint uploads have been failing."""

    def __init__(self, trial_id: str, storage: Location) -> None:
        self.trial_id, self.storage = trial_id, storage
        self.failing_since: float | None = None  # the first failed upload since the last one that worked

    def failed(self, error: BaseException, epoch: int) -> None:
        """An upload failed transiently: say so (once per outage); StorageError past the patience."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
            print(
                f"trial {self.trial_id}: its checkpoint after epoch {epoch} could not be uploaded to "
                f"{redacted(self.storage.uri)} ({first_line(error, 160)}); training goes on and the next "
                f"checkpoint tries again (for up to {self.storage.patience_s:g} s)",
                file=sys.stderr,
                flush=True,
            )
        elif now - self.failing_since > self.storage.patience_s:
            raise StorageError(
                f"storage {redacted(self.storage.uri)} did not take a checkpoint of trial {self.trial_id} for "
                f"{now - self.failing_since:.0f} s (--storage-patience-s {self.storage.patience_s:g}): "
                f"{first_line(error, 200)}"
            ) from None

    def succeeded(self) -> None:
        """An upload worked: say so if they had been failing."""
        if self.failing_since is not None:
            waited = time.monotonic() - self.failing_since
            print(f"trial {self.trial_id}: checkpoints reach the storage again after {waited:.0f} s", flush=True)
            self.failing_since = None
