"""tune_lsd/search/ray_setup.py: the credentials forwarded to other nodes; Ray's end in the
background, with a real local Ray."""

import gc
import weakref

import pytest
import ray

from tune_lsd.search.ray_setup import (
    FORWARDED_VARIABLES,
    end_ray_in_background,
    forwarded_credentials,
    wait_for_ray_end,
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A HOME of its own and none of the forwarded variables in the environment."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (*FORWARDED_VARIABLES, "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_credentials_in_the_usual_files_are_forwarded_of_the_chosen_profile(home, monkeypatch):
    assert forwarded_credentials() == {}
    (home / ".mlflow").mkdir()
    (home / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = ann\nmlflow_tracking_password = s3cret\n"
    )
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = d\n"
        "[lab]\naws_access_key_id = AKLAB\naws_secret_access_key = l\n"
        "aws_session_token = tok\n"
    )
    assert forwarded_credentials() == {
        "MLFLOW_TRACKING_USERNAME": "ann",
        "MLFLOW_TRACKING_PASSWORD": "s3cret",
        "AWS_ACCESS_KEY_ID": "AKDEFAULT",
        "AWS_SECRET_ACCESS_KEY": "d",
    }
    monkeypatch.setenv("AWS_PROFILE", "lab")
    lab = forwarded_credentials()
    assert (lab["AWS_ACCESS_KEY_ID"], lab["AWS_SECRET_ACCESS_KEY"], lab["AWS_SESSION_TOKEN"]) == ("AKLAB", "l", "tok")
    # the environment wins over the files
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "e")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    assert forwarded_credentials() == {
        "MLFLOW_TRACKING_USERNAME": "bob",
        "MLFLOW_TRACKING_PASSWORD": "pw",
        "AWS_ACCESS_KEY_ID": "AKENV",
        "AWS_SECRET_ACCESS_KEY": "e",
    }


class _Holder:
    """Holds an actor handle in a reference cycle, as a trial's traceback does."""

    def __init__(self, handle):
        self.handle = handle
        self.me = self


@ray.remote(num_cpus=0)
class _Echo:
    def ping(self) -> str:
        return "pong"


def test_ray_ends_in_the_background_with_the_cycles_freed_first_and_the_collector_off_meanwhile():
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    ending = None
    try:
        handle = _Echo.remote()
        assert ray.get(handle.ping.remote()) == "pong"
        holder = weakref.ref(_Holder(handle))
        del handle
        assert holder() is not None  # only the cycle keeps it now
        ending = end_ray_in_background()
        assert holder() is None  # freed while Ray was whole, not during its shutdown
        assert not gc.isenabled()
    finally:
        if ending is not None:
            wait_for_ray_end(ending)
        else:
            ray.shutdown()
    assert gc.isenabled() and not ray.is_initialized()
