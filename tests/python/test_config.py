"""parallel_config, parallel_backend, backend hints and constraints, and nesting."""

from __future__ import annotations

import os
import threading

import pytest

import joblet
from joblet import Parallel, delayed, parallel_backend, parallel_config

import joblet_test_helpers as h

pytestmark = pytest.mark.timeout(60)


def where_all(parallel, n=4, fn=h.where):
    return parallel(delayed(fn)() for _ in range(n))


def assert_in_caller_thread(places):
    me = (os.getpid(), threading.get_ident())
    assert places and all(p == me for p in places), f"{places} != {me}"


def assert_on_two_threads_here(parallel):
    """Two tasks that wait for each other at a barrier: they finish only when they run at
    the same time, on threads of this process."""
    barrier = threading.Barrier(2)
    places = parallel(delayed(h.wait_barrier)(barrier, 20) for _ in range(2))
    assert all(pid == os.getpid() for pid, _ in places)
    idents = {ident for _, ident in places}
    assert len(idents) == 2
    return places


def test_default_runs_in_the_caller():
    # n_jobs None -> 1 -> the tasks run in the caller.
    assert_in_caller_thread(where_all(Parallel()))
    assert_in_caller_thread(where_all(Parallel(n_jobs=None)))


def test_parallel_config_threading():
    with parallel_config(backend="threading", n_jobs=2):
        p = Parallel()
        assert p.n_jobs == 2
        assert_on_two_threads_here(p)


def test_parallel_config_explicit_backend_wins():
    with parallel_config(backend="threading", n_jobs=2):
        assert_in_caller_thread(where_all(Parallel(backend="sequential")))
        # An explicit n_jobs wins too.
        assert_in_caller_thread(where_all(Parallel(n_jobs=1)))
        # An explicit process backend takes the context's n_jobs.
        pids = where_all(Parallel(backend="loky"), n=6, fn=h.getpid)
        assert os.getpid() not in pids


def test_parallel_config_restored_after_the_block():
    with parallel_config(backend="threading", n_jobs=2):
        pass
    assert_in_caller_thread(where_all(Parallel()))
    with pytest.raises(RuntimeError):
        with parallel_config(backend="threading", n_jobs=2):
            raise RuntimeError("leave the block by an exception")
    assert_in_caller_thread(where_all(Parallel()))


def test_parallel_config_nesting():
    with parallel_config(backend="threading", n_jobs=2):
        with parallel_config(n_jobs=1):
            # The inner block's n_jobs, the outer block's backend.
            assert_in_caller_thread(where_all(Parallel()))
        assert_on_two_threads_here(Parallel())
        with parallel_config(backend="sequential"):
            assert_in_caller_thread(where_all(Parallel()))
        assert_on_two_threads_here(Parallel())
    assert_in_caller_thread(where_all(Parallel()))


def test_parallel_config_loky_n_jobs():
    with parallel_config(backend="loky", n_jobs=2):
        pids = where_all(Parallel(), n=6, fn=h.getpid)
        assert os.getpid() not in pids


def test_parallel_config_unregister():
    config = parallel_config(backend="threading", n_jobs=2)
    try:
        assert Parallel().n_jobs == 2
    finally:
        config.unregister()
    assert_in_caller_thread(where_all(Parallel()))


def test_parallel_config_is_per_thread():
    seen = {}

    def other_thread():
        seen["places"] = where_all(Parallel())
        seen["ident"] = threading.get_ident()

    with parallel_config(backend="threading", n_jobs=2):
        t = threading.Thread(target=other_thread)
        t.start()
        t.join(30)
    assert not t.is_alive()
    # The other thread did not see this thread's block: its call ran in that thread.
    assert all(p == (os.getpid(), seen["ident"]) for p in seen["places"])


def test_parallel_backend_yields_backend_and_n_jobs():
    with parallel_backend("threading", n_jobs=2) as (backend, n_jobs):
        assert n_jobs == 2
        assert type(backend).__name__ == "ThreadingBackend"
        assert isinstance(backend, joblet.ParallelBackendBase)
        assert_on_two_threads_here(Parallel())
    assert_in_caller_thread(where_all(Parallel()))


def test_parallel_backend_default_n_jobs_is_minus_one():
    with parallel_backend("threading") as (_, n_jobs):
        assert n_jobs == -1
        assert Parallel().n_jobs == -1


def test_effective_n_jobs():
    assert joblet.effective_n_jobs(-1) == joblet.cpu_count()
    assert joblet.effective_n_jobs(1) == 1
    assert joblet.effective_n_jobs(2) == 2
    assert joblet.effective_n_jobs(-2) == max(joblet.cpu_count() - 1, 1)
    assert joblet.cpu_count() >= 1
    assert joblet.cpu_count() <= (os.cpu_count() or 1)
    with parallel_config(backend="sequential"):
        assert joblet.effective_n_jobs(-1) == 1


def test_require_sharedmem_forces_threads():
    shared = []

    def append(i):
        shared.append(i)
        return os.getpid()

    pids = Parallel(n_jobs=2, require="sharedmem")(delayed(append)(i) for i in range(6))
    assert pids == [os.getpid()] * 6
    assert sorted(shared) == list(range(6))
    assert_on_two_threads_here(Parallel(n_jobs=2, require="sharedmem"))


def test_require_sharedmem_in_a_loky_config_uses_threads():
    with parallel_config(backend="loky", n_jobs=2):
        pids = where_all(Parallel(require="sharedmem"), n=4, fn=h.getpid)
        assert pids == [os.getpid()] * 4


def test_require_sharedmem_with_explicit_process_backend_raises():
    with pytest.raises(ValueError):
        Parallel(n_jobs=2, backend="loky", require="sharedmem")


def test_prefer_threads():
    p = Parallel(n_jobs=2, prefer="threads")
    assert_on_two_threads_here(p)


def test_prefer_processes():
    pids = where_all(Parallel(n_jobs=2, prefer="processes"), n=4, fn=h.getpid)
    assert os.getpid() not in pids


def test_invalid_hints_raise():
    with pytest.raises(ValueError):
        Parallel(n_jobs=2, prefer="gpu")
    with pytest.raises(ValueError):
        Parallel(n_jobs=2, require="nothing")
    with pytest.raises(ValueError):
        Parallel(n_jobs=2, prefer="processes", require="sharedmem")
    with pytest.raises(ValueError):
        parallel_config(backend="nope")


def test_nested_parallel_inside_loky_uses_threads_then_sequential():
    results = Parallel(n_jobs=2)(delayed(h.nested_outer)() for _ in range(2))
    assert len(results) == 2
    for outer_pid, _outer_ident, middles in results:
        assert outer_pid != os.getpid(), "the outer tasks ran in the caller"
        assert len(middles) == 3
        for middle_pid, middle_ident, leaves in middles:
            # Second level: threads of the outer task's worker process.
            assert middle_pid == outer_pid
            # Third level: sequential, in the second-level task's own thread.
            assert len(leaves) == 3
            assert all(leaf == (middle_pid, middle_ident) for leaf in leaves), (
                leaves,
                (middle_pid, middle_ident),
            )


def test_nested_parallel_inside_threads():
    results = Parallel(n_jobs=2, backend="threading")(delayed(h.nested_outer)() for _ in range(2))
    for outer_pid, _outer_ident, middles in results:
        assert outer_pid == os.getpid()
        for middle_pid, middle_ident, leaves in middles:
            assert middle_pid == os.getpid()
            assert all(leaf == (middle_pid, middle_ident) for leaf in leaves)


def test_a_multiprocessing_context_as_backend_runs_on_worker_processes():
    import multiprocessing as mp

    pids = Parallel(n_jobs=2, backend=mp.get_context("spawn"))(
        delayed(os.getpid)() for _ in range(4)
    )
    assert os.getpid() not in pids


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_active_backend_inside_tasks_is_the_nested_one(backend):
    from joblet._config import get_active_backend

    top, _ = get_active_backend()
    assert (type(top).__name__, top.nesting_level) == ("LokyBackend", 0)
    inside = Parallel(n_jobs=2, backend=backend)(delayed(h.active_backend_here)(i) for i in range(2))
    assert inside == [("ThreadingBackend", 1)] * 2
    deeper = Parallel(n_jobs=2, backend=backend)(delayed(h.nested_active_backend)(i) for i in range(2))
    assert deeper == [[("SequentialBackend", 2)] * 2] * 2


@pytest.mark.parametrize(
    "outer, inner, message",
    [
        ("threading", "loky", "Loky-backed parallel loops cannot be nested below threads, setting n_jobs=1"),
        ("threading", "multiprocessing", "Multiprocessing-backed parallel loops cannot be nested below threads, setting n_jobs=1"),
        ("loky", "multiprocessing", "Multiprocessing-backed parallel loops cannot be nested, setting n_jobs=1"),
        ("loky", "loky", None),
        ("loky", "threading", None),
    ],
)
def test_process_backends_nested_where_joblib_refuses_them_warn_and_run_in_place(outer, inner, message):
    out = Parallel(n_jobs=2, backend=outer)(delayed(h.nested_call_warnings)(inner) for _ in range(2))
    for warned, in_place in out:
        if message is None:
            assert warned == []
        else:
            assert warned == [message]
            assert in_place, "n_jobs=1 must run the tasks in the calling thread"
