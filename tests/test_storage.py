"""tune_lsd/storage.py on a local folder and on a real object store (SeaweedFS's S3 gateway):
the same operations, the endpoint from the environment, and one-line errors for a store that
cannot be used."""

from __future__ import annotations

import pickle

import pytest

from tune_lsd.storage import Location, StorageError, is_transient, resolve_uri, retrying


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path, monkeypatch) -> Location:
    if request.param == "local":
        return Location(tmp_path / "storage")
    store = request.getfixturevalue("object_store")
    for key, value in store.credentials().items():
        monkeypatch.setenv(key, value)
    return Location(store.uri(f"test-storage/{tmp_path.name}"))


def test_files_and_folders_round_trip(place):
    (place / "searches" / "a" / "search.yaml").write_text("name: a\n")
    (place / "searches" / "a" / "finished" / "t1.json").write_text('{"epoch": 3}')
    (place / "searches" / "a" / "finished" / "t2.json").write_text('{"epoch": 2}')
    (place / "ray" / "a" / "trial_1" / "checkpoint_000000" / "state.bin").write_text("x" * 1000)
    assert (place / "searches" / "a" / "search.yaml").read_text() == "name: a\n"
    assert (place / "searches" / "a" / "search.yaml").exists() and not (place / "searches" / "b").exists()
    assert (place / "searches" / "a" / "finished").names(".json") == ["t1.json", "t2.json"]
    assert (place / "searches").folders() == ["a"] and (place / "nowhere").names() == []
    assert place.size() == (4, len("name: a\n") + len('{"epoch": 3}') * 2 + 1000)
    (place / "ray" / "a" / "trial_1" / "checkpoint_000000").delete()
    assert (place / "ray" / "a" / "trial_1").folders() == [] and place.size()[0] == 3
    (place / "searches" / "a" / "search.yaml").write_text("name: b\n")  # replaced whole
    assert (place / "searches" / "a" / "search.yaml").read_text() == "name: b\n"
    place.check_writable()


def test_a_location_pickles_as_its_uri_and_patience_only(place):
    copy = pickle.loads(pickle.dumps(Location(place.uri, patience_s=42) / "x"))
    assert (
        copy == place / "x"
        and copy.patience_s == 42
        and copy._filesystem is None
        and b"SECRET" not in pickle.dumps(place).upper()
    )


def test_the_s3_endpoint_comes_from_the_environment_when_the_uri_has_none(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert resolve_uri("s3://bucket/prefix") == "s3://bucket/prefix?endpoint_override=127.0.0.1%3A9000&scheme=http"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://objects.example.org")  # the S3 one wins
    assert resolve_uri("s3://bucket") == "s3://bucket?endpoint_override=objects.example.org&scheme=https"
    given = "s3://bucket/p?endpoint_override=10.0.0.1:8333&scheme=http"
    assert resolve_uri(given) == "s3://bucket/p?endpoint_override=10.0.0.1%3A8333&scheme=http"  # the URI's own wins
    assert (Location(given) / "ray").uri == "s3://bucket/p/ray?endpoint_override=10.0.0.1%3A8333&scheme=http"


def test_unusable_object_storage_is_one_line_naming_the_reason(object_store, monkeypatch):
    for key, value in object_store.credentials().items():
        monkeypatch.setenv(key, value)
    cases = [
        (f"s3://no-such-bucket/x?endpoint_override={object_store.endpoint}&scheme=http", "the bucket does not exist"),
        ("s3://tune-lsd/x?endpoint_override=127.0.0.1:9&scheme=http", "the endpoint 127.0.0.1:9 does not answer"),
    ]
    for uri, reason in cases:
        with pytest.raises(StorageError) as error:
            Location(uri).check_writable()
        assert reason in str(error.value) and "\n" not in str(error.value), str(error.value)
    (Location(object_store.uri("")) / "a-file").write_text("not a folder")
    with pytest.raises(StorageError, match="is a file, not a folder: give the folder it is in"):
        Location(object_store.uri("a-file")).check_writable()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StorageError, match="the credentials were refused") as error:
        Location(object_store.uri("x")).check_writable()
    assert "\n" not in str(error.value)


def test_an_endpoint_that_is_not_an_object_store_is_one_line(tmp_path, monkeypatch):
    """A web server at the endpoint (a wrong port, the MLflow server's): it answers, not as S3."""
    import http.server
    import threading

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"s3://bucket/x?endpoint_override=127.0.0.1:{server.server_address[1]}&scheme=http"
        with pytest.raises(StorageError, match="the endpoint answers, but not as an S3 object store") as error:
            Location(uri).check_writable()
        assert "\n" not in str(error.value)
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "uri, message",
    [
        ("s3://ab/x", "'ab' is not a valid S3 bucket name (3-63 characters"),
        ("s3://" + "b" * 64 + "/x", "is not a valid S3 bucket name"),
        ("s3://My_Bucket/x", "'My_Bucket' is not a valid S3 bucket name"),
        ("s3://key:secret@bucket/x", "the URI carries credentials, which would be saved with the search and printed"),
    ],
)
def test_a_uri_s3_would_refuse_or_that_carries_credentials_is_one_line(uri, message):
    with pytest.raises(StorageError) as error:
        Location(uri)
    assert message in str(error.value) and "secret" not in str(error.value)


@pytest.mark.parametrize(
    "error, transient",
    [
        (OSError("AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect"), True),
        (OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate."), True),
        (OSError("AWS Error SERVICE_UNAVAILABLE during GetObject operation (HTTP status 503)"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (TimeoutError(), True),
        (OSError("AWS Error NO_SUCH_BUCKET during HeadObject operation: The specified bucket does not exist"), False),
        (OSError("AWS Error ACCESS_DENIED during PutObject operation"), False),
        (FileNotFoundError("Path does not exist 'b/k'; timed out"), False),  # missing is missing
        (ValueError("connection refused"), False),  # not an I/O error
    ],
)
def test_which_errors_are_worth_another_try(error, transient):
    assert is_transient(error) is transient


def test_a_store_that_is_down_is_waited_for_and_one_that_stays_down_fails_in_one_line(
    own_object_store, monkeypatch, tmp_path
):
    """The real store SIGKILLed and restarted on its folder: an operation during the outage waits
    and succeeds once the store is back; with a patience shorter than the outage it fails in one
    line naming the store and the operation."""
    import threading
    import time

    from object_store import kill_object_store, restart_object_store

    for key, value in own_object_store.credentials().items():
        monkeypatch.setenv(key, value)
    patient = Location(own_object_store.uri(f"outage-{tmp_path.name}"), patience_s=120)
    (patient / "finished" / "t1.json").write_text('{"epoch": 3}')
    kill_object_store(own_object_store)
    restarter = threading.Timer(12, restart_object_store, args=(own_object_store,))
    restarter.start()
    try:
        impatient = Location(patient.uri, patience_s=3)
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            (impatient / "finished" / "t1.json").read_text()
        assert time.monotonic() - started < 12
        message = str(caught.value)
        assert "\n" not in message and message.startswith(
            f"storage {patient.uri.split('?')[0]}/finished/t1.json did not answer"
        )
        assert "--storage-patience-s 3" in message and "reading t1.json failed" in message

        lines: list[str] = []
        started = time.monotonic()
        once = Location(patient.uri, patience_s=0)  # no waiting of its own: retrying() below waits
        text = retrying(
            lambda: (once / "finished" / "t1.json").read_text(), "reading t1.json", patient.uri, 120, lines.append
        )
        assert text == '{"epoch": 3}' and time.monotonic() - started > 5
        assert len(lines) == 2 and "trying again for up to 120 s" in lines[0] and "done after" in lines[1]
        (patient / "finished" / "t2.json").write_text("{}")  # writes work again too
        assert (patient / "finished").names() == ["t1.json", "t2.json"]
    finally:
        restarter.join()
