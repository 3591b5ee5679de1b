"""tune_lsd/storage.py on a local folder and on a real object store (SeaweedFS's S3 gateway):
the same operations, the endpoint from the environment, and one-line errors for a store that
cannot be used."""

from __future__ import annotations

import pickle

import pytest

from tune_lsd.storage import Location, StorageError, resolve_uri


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


def test_a_location_pickles_as_its_uri_only(place):
    copy = pickle.loads(pickle.dumps(place / "x"))
    assert copy == place / "x" and copy._filesystem is None and b"SECRET" not in pickle.dumps(place).upper()


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
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StorageError, match="the credentials were refused") as error:
        Location(object_store.uri("x")).check_writable()
    assert "\n" not in str(error.value)
