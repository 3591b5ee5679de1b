"""Ray's end in the background (tune_lsd/search/ray_setup.py), with a real local Ray."""

import gc
import weakref

import ray

from tune_lsd.search.ray_setup import end_ray_in_background, wait_for_ray_end


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
