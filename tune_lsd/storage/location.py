"""Where a search keeps what more than one process reads: a local or NFS folder, or object storage.

    place = Location("s3://team-bucket/searches")       # or "runs", "/mnt/nfs/runs", "gs://..."
    (place / "searches" / "demo" / "search.yaml").write_text(text)

A :class:`Location` is a folder named by a path or a URI that pyarrow's filesystems know
(``s3://``, ``gs://``, ``abfs://``, ``hdfs://``, ``file://``). Ray Tune writes its experiment
state and checkpoints there (its ``storage_path``), and tune_lsd its own small files: the
search's settings, its completion record and the finished-trial records that make resume exact.

S3-compatible stores (SeaweedFS, MinIO, Ceph) are reached through the URI's
``endpoint_override`` (and ``scheme=http`` for plain HTTP), or, when the URI has none, the
standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables, which :func:`resolve_uri`
writes into the URI (pyarrow itself ignores them). Credentials never go in the URI: pyarrow
reads ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or ``~/.aws/credentials``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from tune_lsd.errors import first_line
from tune_lsd.storage.waiting import DEFAULT_PATIENCE_S, Result, StorageError, redacted, retrying

CHECK_TIMEOUT_S = 10.0  # an endpoint that does not answer within this fails the check before a search


def is_uri(location: str) -> bool:
    return "://" in location


def resolve_uri(location: str) -> str:
    """An absolute local path, or the URI with its S3 endpoint from the environment when it has
    none. A URI that carries credentials, or names a bucket S3 would refuse, is one line."""
    if not is_uri(location):
        return str(Path(location).expanduser().resolve())
    parts = urlsplit(location)
    _check_uri(parts)
    query = dict(parse_qsl(parts.query))
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if parts.scheme == "s3" and "endpoint_override" not in query and endpoint:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        query["endpoint_override"] = url.netloc
        query.setdefault("scheme", url.scheme)
    return urlunsplit(parts._replace(query=urlencode(query)))


class Location:
    """A folder (or a file in one) on a local disk, NFS or object storage; picklable (as its URI)."""

    def __init__(self, location: str | Path, patience_s: float = DEFAULT_PATIENCE_S) -> None:
        self.uri = resolve_uri(str(location))
        self.patience_s = patience_s  # how long a store that does not answer is waited for
        self._filesystem = None

    def __getstate__(self) -> dict:
        # the filesystem is rebuilt where it is used (credentials stay there)
        return {"uri": self.uri, "patience_s": self.patience_s}

    def __setstate__(self, state: dict) -> None:
        self.uri, self._filesystem = state["uri"], None
        self.patience_s = state.get("patience_s", DEFAULT_PATIENCE_S)

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and other.uri == self.uri

    def __truediv__(self, name: str) -> Location:
        if not self.is_remote:
            return Location(Path(self.uri) / name, self.patience_s)
        parts = urlsplit(self.uri)
        return Location(
            urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + name.strip("/"))), self.patience_s
        )

    def _retrying(self, operation: Callable[[], Result], what: str) -> Result:
        """``operation`` on this location, waited for while the store does not answer."""
        return retrying(operation, f"{what} {self.name}", self.uri, self.patience_s)

    @property
    def is_remote(self) -> bool:
        """Object storage (or any URI): nodes reach it over the network, not through a mount."""
        return is_uri(self.uri)

    @property
    def name(self) -> str:
        return urlsplit(self.uri).path.rstrip("/").rsplit("/", 1)[-1] if self.is_remote else Path(self.uri).name

    @property
    def local_path(self) -> Path:
        """The folder on this machine (local and NFS locations only)."""
        if self.is_remote:
            raise ValueError(f"{self.uri} is not a local path")
        return Path(self.uri)

    def _fs(self):
        """(pyarrow filesystem, path in it), built on first use."""
        if self._filesystem is None:
            import pyarrow.fs

            try:
                self._filesystem = pyarrow.fs.FileSystem.from_uri(self.uri)
            except Exception as error:  # pyarrow raises ArrowInvalid / OSError for a bad URI
                raise StorageError(f"storage {self.uri}: {first_line(error)}") from None
        return self._filesystem

    def exists(self) -> bool:
        import pyarrow.fs

        filesystem, path = self._fs()
        return self._retrying(lambda: filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound, "looking up")

    def _is_file_here(self) -> bool:
        """Whether this location is a file; False when that cannot be told (the probe that
        follows in check_writable names the reason better: a HEAD request's error has no text)."""
        import pyarrow.fs

        filesystem, path = self._fs()
        try:
            return filesystem.get_file_info(path).type == pyarrow.fs.FileType.File
        except OSError:
            return False

    def read_text(self) -> str:
        filesystem, path = self._fs()

        def read() -> str:
            with filesystem.open_input_stream(path) as stream:
                return stream.read().decode()

        return self._retrying(read, "reading")

    def write_text(self, text: str) -> None:
        """Write the whole file at once: a reader sees the old content or the new, never a part
        (an object store's upload is atomic; a local file is written aside, synced, then renamed)."""
        if not self.is_remote:
            path = self.local_path
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}")
            with open(temporary, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            return
        filesystem, path = self._fs()

        def write() -> None:
            with filesystem.open_output_stream(path) as stream:
                stream.write(text.encode())

        self._retrying(write, "writing")

    def _entries(self, recursive: bool = False) -> list:
        """pyarrow's FileInfo of what is in this folder (directly, or below); none if it is missing."""
        import pyarrow.fs

        filesystem, path = self._fs()
        selector = pyarrow.fs.FileSelector(path, recursive=recursive, allow_not_found=True)
        return self._retrying(lambda: filesystem.get_file_info(selector), "listing")

    def names(self, suffix: str = "") -> list[str]:
        """Names of the entries directly in this folder that end with ``suffix`` (none if it is missing)."""
        return sorted(entry.base_name for entry in self._entries() if entry.base_name.endswith(suffix))

    def folders(self) -> list[str]:
        """Names of the sub-folders directly in this folder."""
        import pyarrow.fs

        return sorted(entry.base_name for entry in self._entries() if entry.type == pyarrow.fs.FileType.Directory)

    def size(self) -> tuple[int, int]:
        """(files, bytes) in this folder and below."""
        import pyarrow.fs

        files = [entry for entry in self._entries(recursive=True) if entry.type == pyarrow.fs.FileType.File]
        return len(files), sum(entry.size for entry in files)

    def delete(self) -> None:
        """Delete this file, or this folder and everything in it (nothing if it is missing)."""
        import pyarrow.fs

        filesystem, path = self._fs()

        def delete() -> None:
            kind = filesystem.get_file_info(path).type
            if kind == pyarrow.fs.FileType.File:
                filesystem.delete_file(path)
            elif kind == pyarrow.fs.FileType.Directory:
                filesystem.delete_dir(path)

        self._retrying(delete, "deleting")

    def check_writable(self) -> None:
        """Write, read back and delete a small file here: one line (StorageError) when that fails,
        naming what is wrong (no answer from the endpoint, no bucket, credentials refused)."""
        probe = Location(self.uri, patience_s=0) / f".tune_lsd-probe-{os.getpid()}"  # fails at once: nothing to lose
        try:
            if self.is_remote:
                _check_endpoint_answers(self.uri)
            if self._is_file_here():  # before the probe: deleting it leaves a folder marker there
                raise StorageError(f"storage {redacted(self.uri)} is a file, not a folder: give the folder it is in")
            probe.write_text("tune_lsd")
            if probe.read_text() != "tune_lsd":
                raise StorageError(f"storage {self.uri}: a file written there read back different")
            filesystem, path = probe._fs()
            filesystem.delete_file(path)
        except StorageError:
            raise
        except Exception as error:  # pyarrow raises OSError with AWS's error text
            raise StorageError(f"storage {self.uri} is not writable: {_reason(error)}") from None


S3_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _check_uri(parts: SplitResult) -> None:
    """Credentials never go in a URI (it is saved with the search and printed); an S3 bucket name
    follows S3's rules (3-63 lowercase letters, digits, '.' and '-'), which stores enforce with
    an error that does not say so."""
    where = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
    if parts.username or parts.password:
        raise StorageError(
            f"storage {where}: the URI carries credentials, which would be saved with the search and printed; "
            "give them in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws/credentials instead"
        )
    bucket = parts.netloc
    if parts.scheme == "s3" and (not S3_BUCKET_NAME.match(bucket) or ".." in bucket):
        raise StorageError(
            f"storage {where}: {bucket!r} is not a valid S3 bucket name (3-63 characters: lowercase letters, digits, "
            "'.' and '-', starting and ending with a letter or digit)"
        )


def _check_endpoint_answers(uri: str) -> None:
    """An S3 endpoint that does not answer fails in seconds, not after pyarrow's retries."""
    import socket

    query = dict(parse_qsl(urlsplit(uri).query))
    endpoint = query.get("endpoint_override")
    if not endpoint:
        return
    host, _, port_text = endpoint.rpartition(":") if ":" in endpoint else (endpoint, "", "")
    port = int(port_text) if port_text.isdigit() else (80 if query.get("scheme") == "http" else 443)
    try:
        socket.create_connection((host or endpoint, port), timeout=CHECK_TIMEOUT_S).close()
    except OSError as error:
        raise StorageError(f"storage {uri}: the endpoint {endpoint} does not answer ({error})") from None


def _reason(error: Exception) -> str:
    """The part of a pyarrow S3 error that says what is wrong."""
    text = first_line(error, 400)
    for code, meaning in (
        ("NO_SUCH_BUCKET", "the bucket does not exist"),
        ("SIGNATURE_DOES_NOT_MATCH", "the credentials were refused (AWS_SECRET_ACCESS_KEY)"),
        ("INVALID_ACCESS_KEY_ID", "the credentials were refused (AWS_ACCESS_KEY_ID)"),
        ("ACCESS_DENIED", "access denied for these credentials"),
        ("AWS Error UNKNOWN (HTTP status", "the endpoint answers, but not as an S3 object store"),
    ):
        if code in text:
            return f"{meaning} ({text})"
    return text
