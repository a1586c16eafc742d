"""Custom joblib backends (joblib 1.6's ``ParallelBackendBase`` contract): backends written
here, run through ``register_parallel_backend`` / ``parallel_config`` and as instances, and
joblib's own backend classes run by joblet's driver (``joblet._custom``)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import multiprocessing
import multiprocessing.pool
import os
import pickle
import threading

import pytest

import joblet
from joblet import (
    Parallel,
    ParallelBackendBase,
    delayed,
    parallel_config,
    register_parallel_backend,
)
from joblet._backends import BACKENDS, AutoBatchingMixin, FallbackToBackend, SequentialBackend
from joblet._custom import Batch, _with_remote_traceback

import joblet_test_helpers as h

pytestmark = pytest.mark.timeout(60)

WAIT = 20  # seconds a task waits for an event before giving up (never reached when all is well)


# Backends ----------------------------------------------------------------------------------


class ExecutorBackend(ParallelBackendBase):
    """The modern contract: ``submit`` returns a future, results come through the callback.
    Records every hook call in ``log`` and the size of every batch in ``sizes``."""

    supports_retrieve_callback = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.log = []
        self.sizes = []
        self.configure_kwargs = None
        self.executor = None

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **kwargs):
        self.log.append("configure")
        self.configure_kwargs = dict(kwargs, prefer=prefer, require=require)
        n = super().configure(n_jobs, parallel)
        if n > 1:
            self.executor = concurrent.futures.ThreadPoolExecutor(n)
        return n

    def start_call(self):
        self.log.append("start_call")

    def submit(self, func, callback=None):
        assert callable(func) and len(func) >= 1
        self.sizes.append(len(func))
        future = self.executor.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out):
        return out.result()

    def abort_everything(self, ensure_ready=True):
        self.log.append(f"abort_everything({ensure_ready})")

    def stop_call(self):
        self.log.append("stop_call")

    def terminate(self):
        self.log.append("terminate")
        if self.executor is not None:
            self.executor.shutdown(wait=False)
            self.executor = None


class OldStyleBackend(ParallelBackendBase):
    """A backend of joblib < 1.5: ``apply_async`` returns a ``multiprocessing`` AsyncResult,
    read with ``retrieve_result`` (no ``supports_retrieve_callback``). Its pool calls the
    callback on success only, as many old backends did."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.pool = None
        self.log = []

    def configure(self, n_jobs=1, parallel=None, **kwargs):
        n = super().configure(n_jobs, parallel)
        self.pool = multiprocessing.pool.ThreadPool(n)
        return n

    def apply_async(self, func, callback=None):
        return self.pool.apply_async(func, callback=callback)

    def abort_everything(self, ensure_ready=True):
        self.log.append(f"abort_everything({ensure_ready})")

    def terminate(self):
        self.log.append("terminate")
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None


class TimedOldStyleBackend(OldStyleBackend):
    """An old-style backend that declares timeout and generator support."""

    supports_timeout = True
    supports_return_generator = True


class RetrieveCallbackPoolBackend(OldStyleBackend):
    """joblib's own pattern for pools: ``supports_retrieve_callback`` with the pool's
    ``callback`` and ``error_callback``, which receive the value or the exception."""

    supports_retrieve_callback = True

    def apply_async(self, func, callback=None):
        return self.pool.apply_async(func, callback=callback, error_callback=callback)

    def retrieve_result_callback(self, out):
        if isinstance(out, BaseException):
            raise out
        return out


class SpawnProcessBackend(ParallelBackendBase):
    """Tasks in fresh worker processes (``concurrent.futures`` with spawn): batches travel
    pickled."""

    supports_retrieve_callback = True

    def configure(self, n_jobs=1, parallel=None, **kwargs):
        n = super().configure(n_jobs, parallel)
        self.executor = concurrent.futures.ProcessPoolExecutor(
            n, mp_context=multiprocessing.get_context("spawn")
        )
        return n

    def submit(self, func, callback=None):
        future = self.executor.submit(func)
        future.add_done_callback(callback)
        return future

    def terminate(self):
        self.executor.shutdown(wait=True)


@pytest.fixture
def registered():
    """Registers ExecutorBackend as "executor" for one test."""
    register_parallel_backend("executor", ExecutorBackend)
    yield "executor"
    BACKENDS.pop("executor", None)


# Results -----------------------------------------------------------------------------------


@pytest.mark.parametrize("return_as", ["list", "generator", "generator_unordered"])
def test_results_through_registration(registered, return_as):
    with parallel_config(backend=registered, n_jobs=2):
        p = Parallel(return_as=return_as)
        assert type(p._backend) is ExecutorBackend
        out = p(delayed(h.square)(i) for i in range(50))
    if return_as == "list":
        assert out == [i * i for i in range(50)]
    else:
        out = list(out)
        expected = [i * i for i in range(50)]
        assert (out if return_as == "generator" else sorted(out)) == expected


@pytest.mark.parametrize("batch_size", [1, 4, "auto"])
def test_results_through_an_instance(batch_size):
    backend = ExecutorBackend()
    out = Parallel(n_jobs=3, backend=backend, batch_size=batch_size)(
        delayed(h.add)(i, y=i, z=1) for i in range(37)
    )
    assert out == [2 * i + 1 for i in range(37)]
    assert sum(backend.sizes) == 37


@pytest.mark.timeout(30)
def test_unordered_generator_yields_in_completion_order():
    # Task 0 cannot finish before the consumer has seen task 1's result.
    release = threading.Event()

    def slow(i):
        if i == 0:
            assert release.wait(WAIT)
        return i

    parallel = Parallel(
        n_jobs=2, backend=ExecutorBackend(), batch_size=1, return_as="generator_unordered"
    )
    gen = parallel(delayed(slow)(i) for i in range(2))
    assert next(gen) == 1
    release.set()
    assert list(gen) == [0]


def test_old_style_apply_async_backend():
    backend = OldStyleBackend()
    with pytest.warns(DeprecationWarning, match="apply_async"):
        out = Parallel(n_jobs=2, backend=backend)(delayed(h.square)(i) for i in range(20))
    assert out == [i * i for i in range(20)]
    assert backend.log == ["terminate"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_old_style_backend_refuses_generators_unless_it_says_so():
    with pytest.raises(ValueError, match="does not support return_as"):
        Parallel(n_jobs=2, backend=OldStyleBackend(), return_as="generator")
    gen = Parallel(n_jobs=2, backend=TimedOldStyleBackend(), return_as="generator")(
        delayed(h.square)(i) for i in range(10)
    )
    assert list(gen) == [i * i for i in range(10)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_pool_backend_with_retrieve_callback():
    out = Parallel(n_jobs=2, backend=RetrieveCallbackPoolBackend(), return_as="generator")(
        delayed(h.square)(i) for i in range(20)
    )
    assert list(out) == [i * i for i in range(20)]


@pytest.mark.timeout(120)
def test_process_backend_pickles_batches():
    out = Parallel(n_jobs=2, backend=SpawnProcessBackend())(delayed(h.getpid)(i) for i in range(6))
    assert len(out) == 6 and os.getpid() not in out
    # (Exceptions whose __init__ takes other arguments than their args cannot cross
    # concurrent.futures' process pool: a limit of that backend, not of the driver.)
    with pytest.raises(ValueError, match="bad value 3") as info:
        Parallel(n_jobs=2, backend=SpawnProcessBackend())(delayed(h.raise_at)(i) for i in range(6))
    assert "raise_at" in str(info.value.__cause__)  # the worker's traceback


# Errors, abort, timeout --------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [ExecutorBackend, OldStyleBackend, RetrieveCallbackPoolBackend],
    ids=lambda c: c.__name__,
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_task_exception_type_is_raised(make):
    with pytest.raises(ValueError, match="bad value 3"):
        Parallel(n_jobs=2, backend=make())(delayed(h.raise_at)(i) for i in range(10))
    with pytest.raises(h.CustomError) as info:
        Parallel(n_jobs=2, backend=make())(delayed(h.raise_custom_at)(i) for i in range(10))
    assert info.value.detail == "custom detail"


def test_the_first_error_aborts_the_rest():
    # Task 0 fails at once; every other task waits for an event the test sets only after
    # the call has raised. The window (pre_dispatch) bounds what was submitted, and nothing
    # more is submitted after the failure.
    gate = threading.Event()
    started = []

    def task(i):
        started.append(i)
        if i == 0:
            raise ValueError("first")
        gate.wait(WAIT)
        return i

    backend = ExecutorBackend()
    with pytest.raises(ValueError, match="first"):
        Parallel(n_jobs=2, backend=backend, batch_size=1, pre_dispatch="2*n_jobs")(
            delayed(task)(i) for i in range(100)
        )
    submitted = sum(backend.sizes)
    gate.set()
    assert submitted <= 4
    assert len(started) <= submitted < 100
    assert backend.log == [
        "configure", "start_call", "abort_everything(False)", "stop_call", "terminate"
    ]


def test_a_tasks_stop_iteration_does_not_end_a_generator():
    def task(i):
        if i == 2:
            raise StopIteration("from a task")
        return i

    gen = Parallel(n_jobs=2, backend=ExecutorBackend(), batch_size=1, return_as="generator")(
        delayed(task)(i) for i in range(5)
    )
    with pytest.raises(RuntimeError, match="a task raised StopIteration") as info:
        list(gen)
    assert isinstance(info.value.__cause__, StopIteration)


def test_input_iterator_error_is_raised():
    def tasks():
        yield delayed(h.square)(1)
        raise KeyError("input broke")

    backend = ExecutorBackend()
    with pytest.raises(KeyError, match="input broke"):
        Parallel(n_jobs=2, backend=backend, batch_size=1)(tasks())
    assert backend.log[-3:] == ["abort_everything(False)", "stop_call", "terminate"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("return_as", ["list", "generator", "generator_unordered"])
def test_timeout_raises_multiprocessing_timeout_error(return_as):
    never = threading.Event()

    def stuck(i):
        if i == 1:
            never.wait(WAIT)
        return i

    backend = ExecutorBackend()
    try:
        with pytest.raises(multiprocessing.TimeoutError, match="task 1 was still running"):
            parallel = Parallel(
                n_jobs=2, backend=backend, timeout=1.0, batch_size=1, return_as=return_as
            )
            list(parallel(delayed(stuck)(i) for i in range(4)))
    finally:
        never.set()
    assert "abort_everything(False)" in backend.log and backend.log[-1] == "terminate"


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_timeout_through_retrieve_result():
    never = threading.Event()
    try:
        with pytest.raises(multiprocessing.TimeoutError):
            Parallel(n_jobs=2, backend=TimedOldStyleBackend(), timeout=0.3, batch_size=1)(
                delayed(never.wait)(WAIT) for _ in range(3)
            )
    finally:
        never.set()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_timeout_on_a_backend_without_support_warns():
    with pytest.warns(UserWarning, match="OldStyleBackend' does not support timeout"):
        out = Parallel(n_jobs=2, backend=OldStyleBackend(), timeout=5)(
            delayed(h.square)(i) for i in range(4)
        )
    assert out == [0, 1, 4, 9]


def test_a_task_raising_timeout_error_is_not_a_timeout():
    def task(i):
        raise TimeoutError("the task's own")

    with pytest.raises(TimeoutError, match="the task's own"):
        Parallel(n_jobs=2, backend=ExecutorBackend(), timeout=10)(
            delayed(task)(i) for i in range(3)
        )


def test_submit_failure_is_raised_and_the_backend_released():
    class Refusing(ExecutorBackend):
        def submit(self, func, callback=None):
            raise RuntimeError("no capacity")

    backend = Refusing()
    with pytest.raises(RuntimeError, match="no capacity"):
        Parallel(n_jobs=2, backend=backend)(delayed(h.square)(i) for i in range(3))
    assert backend.log[-2:] == ["stop_call", "terminate"]


# The calls joblib makes ----------------------------------------------------------------------


def test_hooks_of_one_call():
    backend = ExecutorBackend()
    Parallel(n_jobs=2, backend=backend, max_nbytes="2M", extra_option=7)(
        delayed(h.square)(i) for i in range(5)
    )
    assert backend.log == ["configure", "start_call", "stop_call", "terminate"]
    kwargs = backend.configure_kwargs
    assert kwargs["extra_option"] == 7  # Parallel's extra keyword arguments reach configure
    assert kwargs["max_nbytes"] == 2 * 1024 * 1024
    assert {"temp_folder", "mmap_mode", "verbose", "context", "prefer", "require"} <= set(kwargs)


def test_hooks_of_a_with_block():
    backend = ExecutorBackend()
    with Parallel(n_jobs=2, backend=backend) as p:
        assert backend.log == ["configure"]
        assert p(delayed(h.square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
        with pytest.raises(ValueError):
            p(delayed(h.raise_at)(i) for i in range(5))
        assert p(delayed(h.square)(i) for i in range(3)) == [0, 1, 4]
        assert "terminate" not in backend.log
    assert backend.log == [
        "configure",
        "start_call", "stop_call",
        "start_call", "abort_everything(True)", "stop_call",
        "start_call", "stop_call",
        "terminate",
    ]


@pytest.mark.timeout(30)
def test_leaving_a_with_block_stops_its_generator():
    gate = threading.Event()
    backend = ExecutorBackend()
    try:
        with Parallel(n_jobs=2, backend=backend, batch_size=1, return_as="generator") as p:
            gen = p(delayed(gate.wait)(WAIT) for _ in range(10))
        assert backend.log[-3:] == ["abort_everything(False)", "stop_call", "terminate"]
    finally:
        gate.set()
    del gen


@pytest.mark.timeout(30)
def test_a_dropped_generator_stops_the_call():
    gate = threading.Event()
    backend = ExecutorBackend()
    try:
        gen = Parallel(n_jobs=2, backend=backend, batch_size=1, return_as="generator")(
            delayed(gate.wait)(WAIT) for _ in range(10)
        )
        del gen
        gc.collect()
        assert backend.log[-3:] == ["abort_everything(False)", "stop_call", "terminate"]
    finally:
        gate.set()


def test_retrieval_context_is_held_once_per_call():
    class Counting(ExecutorBackend):
        @contextlib.contextmanager
        def retrieval_context(self):
            self.log.append("enter")
            yield
            self.log.append("exit")

    backend = Counting()
    Parallel(n_jobs=2, backend=backend)(delayed(h.square)(i) for i in range(20))
    assert backend.log == ["configure", "start_call", "enter", "exit", "stop_call", "terminate"]


def test_one_worker_runs_in_the_caller():
    backend = ExecutorBackend()
    out = Parallel(n_jobs=1, backend=backend)(delayed(h.where)() for _ in range(3))
    assert out == [(os.getpid(), threading.get_ident())] * 3
    assert backend.sizes == []  # nothing submitted


def test_configure_may_fall_back_to_another_backend():
    class FallingBack(ExecutorBackend):
        def configure(self, n_jobs=1, parallel=None, **kwargs):
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))

    p = Parallel(n_jobs=2, backend=FallingBack())
    assert p(delayed(h.square)(i) for i in range(4)) == [0, 1, 4, 9]
    assert type(p._backend) is SequentialBackend


def test_zero_workers_is_an_error():
    class NoWorkers(ExecutorBackend):
        def configure(self, n_jobs=1, parallel=None, **kwargs):
            return 0

    with pytest.raises(RuntimeError, match="NoWorkers has no active worker"):
        Parallel(n_jobs=2, backend=NoWorkers())(delayed(h.square)(i) for i in range(4))


# Batching and the window ---------------------------------------------------------------------


def test_compute_batch_size_is_honoured():
    class ByFive(ExecutorBackend):
        def __init__(self):
            super().__init__()
            self.completed = []

        def compute_batch_size(self):
            return 5

        def batch_completed(self, batch_size, duration):
            self.completed.append(batch_size)
            assert duration >= 0

    backend = ByFive()
    # A generator: its length is unknown, so no batch is shortened to share the end.
    out = Parallel(n_jobs=2, backend=backend)(delayed(h.square)(i) for i in range(23))
    assert out == [i * i for i in range(23)]
    assert backend.sizes == [5, 5, 5, 5, 3]
    assert sorted(backend.completed) == [3, 5, 5, 5, 5]


def test_fixed_batch_size_wins():
    backend = ExecutorBackend()
    Parallel(n_jobs=2, backend=backend, batch_size=4)(delayed(h.square)(i) for i in range(10))
    assert backend.sizes == [4, 4, 2]


def test_auto_batching_mixin_grows_batches_of_fast_tasks():
    class Auto(AutoBatchingMixin, ExecutorBackend):
        pass

    backend = Auto()
    out = Parallel(n_jobs=2, backend=backend)(delayed(h.square)(i) for i in range(3000))
    assert out == [i * i for i in range(3000)]
    assert max(backend.sizes) >= 8
    assert backend.compute_batch_size() > 1


def test_pre_dispatch_bounds_what_a_generator_pulls():
    pulled = []

    def tasks():
        for i in range(20):
            pulled.append(i)
            yield delayed(h.square)(i)

    gen = Parallel(
        n_jobs=2, backend=ExecutorBackend(), batch_size=1, pre_dispatch=3, return_as="generator"
    )(tasks())
    assert len(pulled) == 3  # three batches of one task are out before anything is consumed
    assert next(gen) == 0
    assert len(pulled) <= 4
    assert list(gen) == [i * i for i in range(1, 20)]


@pytest.mark.parametrize("pre_dispatch", ["all", "n_jobs", "3 * n_jobs", 2])
def test_pre_dispatch_forms(pre_dispatch):
    out = Parallel(n_jobs=2, backend=ExecutorBackend(), pre_dispatch=pre_dispatch)(
        delayed(h.square)(i) for i in range(10)
    )
    assert out == [i * i for i in range(10)]


def test_invalid_pre_dispatch():
    with pytest.raises(ValueError, match="pre_dispatch"):
        Parallel(n_jobs=2, backend=ExecutorBackend(), pre_dispatch="2*jobs")(
            delayed(h.square)(i) for i in range(3)
        )


# Progress, verbose, nesting ------------------------------------------------------------------


@pytest.mark.parametrize("return_as", ["list", "generator_unordered"])
def test_progress_callback(return_as):
    calls = []
    parallel = Parallel(
        n_jobs=2,
        backend=ExecutorBackend(),
        return_as=return_as,
        progress=lambda done, total: calls.append((done, total)),
    )
    out = parallel(delayed(h.square)(i) for i in range(10))
    assert sorted(out) == [i * i for i in range(10)]
    assert calls[-1] == (10, 10)
    done = [d for d, _ in calls]
    assert done == sorted(done)


def test_verbose_lines(capfd):
    Parallel(n_jobs=2, backend=ExecutorBackend(), verbose=10)(
        delayed(h.square)(i) for i in range(4)
    )
    err = capfd.readouterr().err
    assert "[Parallel(n_jobs=2)]: Using backend ExecutorBackend with 2 concurrent workers." in err
    assert "Done   4 out of   4" in err


def test_nested_parallel_inside_a_task_runs_on_threads():
    def inner(i):
        backend, _ = joblet._config.get_active_backend()
        values = Parallel(n_jobs=2)(delayed(h.where)() for _ in range(2))
        return type(backend).__name__, backend.nesting_level, {pid for pid, _ in values}, i

    out = Parallel(n_jobs=2, backend=ExecutorBackend())(delayed(inner)(i) for i in range(4))
    assert out == [("ThreadingBackend", 1, {os.getpid()}, i) for i in range(4)]


def test_nested_backend_of_the_backend_is_used():
    class SelfNesting(ExecutorBackend):
        def get_nested_backend(self):
            return SelfNesting(nesting_level=(self.nesting_level or 0) + 1), 2

    def inner(i):
        backend, n_jobs = joblet._config.get_active_backend()
        values = Parallel()(delayed(h.square)(j) for j in range(3))
        return type(backend).__name__, n_jobs, values

    out = Parallel(n_jobs=2, backend=SelfNesting())(delayed(inner)(i) for i in range(2))
    assert out == [("SelfNesting", 2, [0, 1, 4])] * 2


# Backends written against joblib itself ----------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["ThreadingBackend", "LokyBackend"])
def test_joblibs_own_backends_run_through_joblet(name):
    jb = pytest.importorskip("joblib._parallel_backends")
    backend = getattr(jb, name)()
    out = Parallel(n_jobs=2, backend=backend)(delayed(h.square)(i) for i in range(30))
    assert out == [i * i for i in range(30)]
    with pytest.raises(ValueError, match="bad value 3"):
        Parallel(n_jobs=2, backend=backend)(delayed(h.raise_at)(i) for i in range(10))
    gen = Parallel(n_jobs=2, backend=backend, return_as="generator_unordered")(
        delayed(h.square)(i) for i in range(10)
    )
    assert sorted(gen) == [i * i for i in range(10)]
    # n_jobs=1: joblib's configure raises its own FallbackToBackend(SequentialBackend).
    assert Parallel(n_jobs=1, backend=backend)(delayed(h.square)(i) for i in range(3)) == [0, 1, 4]


def test_a_backend_registered_with_joblib_is_found(monkeypatch):
    joblib_parallel = pytest.importorskip("joblib.parallel")
    monkeypatch.setitem(joblib_parallel.BACKENDS, "only_in_joblib", ExecutorBackend)
    with parallel_config(backend="only_in_joblib", n_jobs=2):
        assert Parallel()(delayed(h.square)(i) for i in range(4)) == [0, 1, 4, 9]


# The batch object ----------------------------------------------------------------------------


def test_batch_is_joblibs_batched_calls():
    batch = Batch([delayed(h.add)(1, y=2), delayed(h.square)(3)], None, None)
    assert len(batch) == 2 and batch() == [3, 9]
    assert pickle.loads(pickle.dumps(batch))() == [3, 9]
    assert batch.items[1] == (h.square, (3,), {})


def test_batch_from_another_process_brings_its_traceback():
    batch = Batch([delayed(h.raise_at)(3)], None, None)
    batch._caller_pid = -1  # as if unpickled in another process
    with pytest.raises(ValueError) as info:
        batch()
    travelled = pickle.loads(pickle.dumps(info.value))
    raised = _with_remote_traceback(travelled)
    assert isinstance(raised.__cause__, joblet.RemoteTraceback)
    assert "raise_at" in str(raised.__cause__)
    assert not hasattr(raised, "_joblet_remote_traceback")


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:`apply_async` is deprecated:DeprecationWarning")
def test_a_failed_call_on_an_old_style_backend_leaves_no_retriever_thread():
    # After the abort the pool is terminated: its AsyncResults never answer, and a retriever
    # that waited on them without looking up stayed blocked forever, one thread per call.
    release = threading.Event()

    def task(i):
        if i == 0:
            raise ValueError("first task fails")
        release.wait(30)  # still running when the call fails
        return i

    for _ in range(3):
        with pytest.raises(ValueError, match="first task fails"):
            Parallel(n_jobs=2, backend=OldStyleBackend(), batch_size=1)(delayed(task)(i) for i in range(6))
    release.set()
    for t in [t for t in threading.enumerate() if t.name == "joblet-custom-retrieve"]:
        t.join(10)
    assert not [t for t in threading.enumerate() if t.name == "joblet-custom-retrieve"]
