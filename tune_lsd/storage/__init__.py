"""Where a search keeps what more than one process reads: a local or NFS folder, or object storage.

- :mod:`~tune_lsd.storage.location`: :class:`Location`, a folder named by a path or a URI.
- :mod:`~tune_lsd.storage.waiting`: a store that does not answer is waited for, up to a patience.
"""

from tune_lsd.storage.location import CHECK_TIMEOUT_S, Location, is_uri, resolve_uri
from tune_lsd.storage.waiting import DEFAULT_PATIENCE_S, StorageError, is_transient, redacted, retrying

__all__ = [
    "CHECK_TIMEOUT_S",
    "DEFAULT_PATIENCE_S",
    "Location",
    "StorageError",
    "is_transient",
    "is_uri",
    "redacted",
    "resolve_uri",
    "retrying",
]
