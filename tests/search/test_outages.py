"""tune_lsd/search/outages.py: Ray Tune's failed copies to a storage that does not answer become
one line when it stops answering and one when it answers again; other records stay Ray's."""

from __future__ import annotations

import logging

from tune_lsd.search.outages import RAY_STORAGE_LOGGERS, outage_lines

OUTAGE = OSError(
    "When testing for existence of bucket 'tune-lsd': AWS Error NETWORK_CONNECTION during HeadBucket operation: "
    "curlCode: 7, Could not connect to server"
)


def test_an_outage_is_two_lines_and_other_records_stay_rays(caplog):
    said: list[str] = []
    syncer, storage = (logging.getLogger(name) for name in RAY_STORAGE_LOGGERS[:2])
    uri = "s3://bucket/p?endpoint_override=h:1"
    with caplog.at_level(logging.INFO), outage_lines(uri, 300, said.append, quiet_s=0) as lines:
        for _ in range(3):  # what Ray logs every few seconds while the store is down
            syncer.warning(f"Last sync command failed with the following error:\nTraceback ...\nOSError: {OUTAGE}")
            try:
                raise OUTAGE
            except OSError:
                storage.exception("Caught exception when creating directory at (fs, bucket/p):")
        storage.warning("Could not upload: AWS Error ACCESS_DENIED during PutObject")  # not an outage
        lines.answered("trial 1a2b saved its checkpoint")
        lines.answered("trial 3c4d saved its checkpoint")  # already said
    assert said == [
        "storage s3://bucket/p does not answer (OSError: When testing for existence of bucket 'tune-lsd': AWS Error "
        "NETWORK_CONNECTION during HeadBucket operation: curlCode: 7, Could not connect to server): the trials train "
        "on and wait for it to save checkpoints (up to 300 s), and Ray Tune's copies of the search's state are tried "
        "again",
        "storage s3://bucket/p answers again after 0 s (trial 1a2b saved its checkpoint)",
    ]
    assert [record.getMessage() for record in caplog.records] == [
        "Could not upload: AWS Error ACCESS_DENIED during PutObject"
    ]
    syncer.warning(f"OSError: {OUTAGE}")  # after the search: the filter is gone
    assert len(caplog.records) == 2


def test_a_blip_shorter_than_the_quiet_time_says_nothing(caplog):
    """A flaky store that answers the next try: Ray's tracebacks are gone and nothing is said."""
    said: list[str] = []
    syncer = logging.getLogger(RAY_STORAGE_LOGGERS[0])
    with caplog.at_level(logging.INFO), outage_lines("s3://bucket/p", 300, said.append, quiet_s=60) as lines:
        syncer.warning(f"Last sync command failed with the following error:\nOSError: {OUTAGE}")
        lines.answered("trial 1a2b saved its checkpoint")
        syncer.warning(f"Last sync command failed with the following error:\nOSError: {OUTAGE}")
    assert said == [] and caplog.records == []
