"""joblib's behaviour, on every backend and worker count: order, laziness, exceptions,
callables, arguments, progress and argument checking."""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import warnings

import pytest

import joblet
from joblet import Parallel, delayed

import joblet_test_helpers as h

pytestmark = pytest.mark.timeout(60)

# dask-threads and dask-processes: backend="dask" on a local cluster of two one-thread
# workers, in this process or in two worker processes (conftest.py).
BACKENDS = ["loky", "multiprocessing", "threading", "sequential", "dask-threads", "dask-processes"]
N_JOBS = [1, 2, -1]
PROCESS_BACKENDS = {"loky", "multiprocessing"}
DASK_THREADS = 2  # the clusters' worker threads, which a dask call uses whatever its n_jobs


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param.startswith("dask-"):
        client = request.getfixturevalue(f"dask_{request.param[5:]}_client")
        with client.as_current():
            yield "dask"
    else:
        yield request.param


@pytest.fixture(params=N_JOBS, ids=lambda n: f"n_jobs={n}")
def n_jobs(request):
    return request.param


def effective(backend, n_jobs):
    if backend == "sequential":
        return 1
    if backend == "dask":
        return DASK_THREADS
    return joblet.cpu_count() if n_jobs == -1 else n_jobs


# Results -----------------------------------------------------------------------------------


def test_list_in_input_order(backend, n_jobs):
    out = Parallel(n_jobs=n_jobs, backend=backend)(delayed(h.square)(i) for i in range(50))
    assert isinstance(out, list)
    assert out == [i * i for i in range(50)]


def test_list_from_a_list_of_tasks(backend, n_jobs):
    tasks = [delayed(h.square)(i) for i in range(7)]
    assert Parallel(n_jobs=n_jobs, backend=backend)(tasks) == [i * i for i in range(7)]


def test_generator_in_input_order(backend, n_jobs):
    gen = Parallel(n_jobs=n_jobs, backend=backend, return_as="generator")(
        delayed(h.square)(i) for i in range(50)
    )
    assert not isinstance(gen, list)
    assert hasattr(gen, "__next__")
    assert list(gen) == [i * i for i in range(50)]


def test_generator_unordered_same_multiset(backend, n_jobs):
    data = [i % 7 for i in range(50)]  # repeated values: a multiset, not a set
    gen = Parallel(n_jobs=n_jobs, backend=backend, return_as="generator_unordered")(
        delayed(h.square)(x) for x in data
    )
    assert not isinstance(gen, list)
    assert sorted(gen) == sorted(x * x for x in data)


@pytest.mark.parametrize("return_as", ["list", "generator", "generator_unordered"])
def test_empty_input(backend, n_jobs, return_as):
    out = Parallel(n_jobs=n_jobs, backend=backend, return_as=return_as)(
        delayed(h.square)(i) for i in range(0)
    )
    assert list(out) == []
    if return_as == "list":
        assert out == []


def test_kwargs(backend, n_jobs):
    out = Parallel(n_jobs=n_jobs, backend=backend)(
        delayed(h.add)(i, y=10, z=100 * i) for i in range(10)
    )
    assert out == [i + 10 + 100 * i for i in range(10)]


def test_hand_made_triples(backend, n_jobs):
    tasks = [(h.add, (i,), {"y": 1}) for i in range(10)]
    tasks.append((h.add, (5, 6), {}))
    assert Parallel(n_jobs=n_jobs, backend=backend)(tasks) == [i + 1 for i in range(10)] + [11]


def test_delayed_makes_a_triple():
    assert delayed(h.add)(1, y=2) == (h.add, (1,), {"y": 2})


def test_lambdas(backend, n_jobs):
    out = Parallel(n_jobs=n_jobs, backend=backend)(delayed(lambda x: x * 3 + 1)(i) for i in range(10))
    assert out == [i * 3 + 1 for i in range(10)]


def test_closures(backend, n_jobs):
    offset = {"value": 1000}

    def make_adder(k):
        def adder(x):
            return x + k + offset["value"]

        return adder

    adders = [make_adder(k) for k in range(5)]
    out = Parallel(n_jobs=n_jobs, backend=backend)(delayed(adders[i % 5])(i) for i in range(10))
    assert out == [i + (i % 5) + 1000 for i in range(10)]


def test_locally_defined_function(backend, n_jobs):
    def local(x, *, power=2):
        return x**power

    out = Parallel(n_jobs=n_jobs, backend=backend)(delayed(local)(i, power=3) for i in range(6))
    assert out == [i**3 for i in range(6)]


# Exceptions --------------------------------------------------------------------------------


def _innermost_frame_name(exc):
    tb = exc.__traceback__
    assert tb is not None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_name


@pytest.mark.parametrize("return_as", ["list", "generator"])
def test_exception_in_task_3_of_10(backend, n_jobs, return_as):
    with pytest.raises(ValueError, match=r"^bad value 3$") as info:
        out = Parallel(n_jobs=n_jobs, backend=backend, return_as=return_as)(
            delayed(h.raise_at)(i) for i in range(10)
        )
        list(out)
    exc = info.value
    assert type(exc) is ValueError
    assert exc.args == ("bad value 3",)
    if effective(backend, n_jobs) == 1:
        # Run in the caller: the exception is raised as it is, from the task's frame.
        assert _innermost_frame_name(exc) == "raise_at"
    elif backend in PROCESS_BACKENDS:
        # From a worker process: the worker's traceback comes as the cause.
        cause = exc.__cause__
        assert isinstance(cause, joblet.RemoteTraceback)
        assert "raise_at" in str(cause)
        assert "bad value 3" in str(cause)


def test_custom_exception_keeps_type_and_attributes(backend, n_jobs):
    with pytest.raises(h.CustomError) as info:
        Parallel(n_jobs=n_jobs, backend=backend)(delayed(h.raise_custom_at)(i) for i in range(10))
    exc = info.value
    assert type(exc) is h.CustomError
    assert exc.code == 3
    assert exc.detail == "custom detail"
    assert str(exc) == "error 3: custom detail"


def test_calls_after_an_exception_still_work(backend, n_jobs):
    with pytest.raises(ValueError):
        Parallel(n_jobs=n_jobs, backend=backend)(delayed(h.raise_at)(i) for i in range(10))
    out = Parallel(n_jobs=n_jobs, backend=backend)(delayed(h.square)(i) for i in range(10))
    assert out == [i * i for i in range(10)]


# Laziness, progress, reuse -----------------------------------------------------------------


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_generator_consumes_input_lazily(backend, n_jobs, return_as):
    # (Dask takes milliseconds per one-task batch: fewer tasks make the same point.)
    total = 200 if backend == "dask" else 1000
    pulled = [0]
    lock = threading.Lock()

    def tasks():
        for i in range(total):
            with lock:
                pulled[0] += 1
            yield delayed(h.square)(i)

    gen = Parallel(
        n_jobs=n_jobs, backend=backend, return_as=return_as, pre_dispatch=4, batch_size=1
    )(tasks())
    first = next(gen)
    with lock:
        pulled_after_first = pulled[0]
    assert pulled_after_first >= 1
    assert pulled_after_first < total, "the whole input was consumed before the first result"
    rest = list(gen)
    results = [first] + rest
    assert pulled[0] == total
    if return_as == "generator":
        assert results == [i * i for i in range(total)]
    else:
        assert sorted(results) == [i * i for i in range(total)]


@pytest.mark.parametrize("return_as", ["list", "generator", "generator_unordered"])
def test_progress_callback(backend, n_jobs, return_as):
    calls = []
    lock = threading.Lock()

    def progress(completed, total):
        with lock:
            calls.append((completed, total))

    out = Parallel(n_jobs=n_jobs, backend=backend, return_as=return_as, progress=progress)(
        delayed(h.square)(i) for i in range(10)
    )
    assert sorted(out) == sorted(i * i for i in range(10))
    assert calls, "the progress callback was never called"
    assert calls[-1] == (10, 10)
    completed = [c for c, _ in calls]
    assert completed == sorted(completed), "completed counts went backwards"
    assert all(t is None or t == 10 for _, t in calls)


def test_context_manager_reused(backend, n_jobs):
    with Parallel(n_jobs=n_jobs, backend=backend) as p:
        first = p(delayed(h.square)(i) for i in range(10))
        second = p(delayed(h.add)(i, y=1) for i in range(5))
    assert first == [i * i for i in range(10)]
    assert second == [i + 1 for i in range(5)]


@pytest.mark.parametrize("batch_size", [1, 3, "auto"])
def test_batch_sizes_keep_order(backend, n_jobs, batch_size):
    out = Parallel(n_jobs=n_jobs, backend=backend, batch_size=batch_size)(
        delayed(h.square)(i) for i in range(23)
    )
    assert out == [i * i for i in range(23)]


# Invalid values ----------------------------------------------------------------------------


def test_n_jobs_zero_raises(backend):
    # joblet accepts n_jobs=0 at construction and refuses it when called (joblib does too).
    with pytest.raises(ValueError, match="n_jobs == 0"):
        Parallel(n_jobs=0, backend=backend)(delayed(h.square)(i) for i in range(3))


@pytest.mark.parametrize("n_jobs", ["two", object()])
def test_n_jobs_not_a_number_raises(backend, n_jobs):
    with pytest.raises(ValueError):
        Parallel(n_jobs=n_jobs, backend=backend)(delayed(h.square)(i) for i in range(3))


def test_return_as_bogus_raises(backend):
    with pytest.raises(ValueError, match="return_as"):
        Parallel(n_jobs=2, backend=backend, return_as="bogus")


@pytest.mark.parametrize("batch_size", [0, -1, "big", 1.5])
def test_batch_size_invalid_raises(backend, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        Parallel(n_jobs=2, backend=backend, batch_size=batch_size)


def test_backend_unknown_raises():
    with pytest.raises(ValueError, match="nope"):
        Parallel(n_jobs=2, backend="nope")


@pytest.mark.parametrize("pre_dispatch", ["3*x", "n_jobs*", "abc", "2 * * n_jobs"])
def test_pre_dispatch_garbage_raises_at_call(backend, pre_dispatch):
    p = Parallel(n_jobs=2, backend=backend, pre_dispatch=pre_dispatch)
    with pytest.raises(ValueError, match="pre_dispatch"):
        p(delayed(h.square)(i) for i in range(3))


@pytest.mark.parametrize("pre_dispatch", ["2 * n_jobs", "n_jobs", "all", 3, "3*n_jobs+1"])
def test_pre_dispatch_valid_values(backend, pre_dispatch):
    out = Parallel(n_jobs=2, backend=backend, pre_dispatch=pre_dispatch)(
        delayed(h.square)(i) for i in range(9)
    )
    assert out == [i * i for i in range(9)]


@pytest.mark.parametrize("timeout", [0, -1, "soon"])
def test_timeout_invalid_raises(timeout):
    with pytest.raises(ValueError, match="timeout"):
        Parallel(n_jobs=2, timeout=timeout)


# Verbose and timeout, as joblib ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_verbose_reports_progress(backend, capfd):
    Parallel(n_jobs=2, backend=backend, verbose=10)(delayed(h.square)(i) for i in range(4))
    out, err = capfd.readouterr()
    text = out + err
    assert "[Parallel(n_jobs=2)]" in text
    assert "Done" in text and "4 out of   4" in text


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_verbose_zero_is_silent(backend, capfd):
    Parallel(n_jobs=2, backend=backend, verbose=0)(delayed(h.square)(i) for i in range(4))
    out, err = capfd.readouterr()
    assert "Parallel" not in out + err


@pytest.mark.parametrize(
    "backend, n_jobs, name",
    [("loky", 2, "LokyBackend"), ("threading", 2, "ThreadingBackend"),
     ("multiprocessing", 2, "MultiprocessingBackend"), ("loky", 1, "SequentialBackend")],
)
def test_verbose_lines_are_joblibs(backend, n_jobs, name):
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        Parallel(n_jobs=n_jobs, backend=backend, verbose=10)(delayed(h.square)(i) for i in range(4))
    lines = buf.getvalue().splitlines()
    prefix = f"[Parallel(n_jobs={n_jobs})]: "
    assert lines[0] == f"{prefix}Using backend {name} with {n_jobs} concurrent workers."
    # joblib's " %5.1fs" after "elapsed:": four spaces before a time under 10 s.
    assert re.fullmatch(re.escape(prefix) + r"Done   4 out of   4 \| elapsed:    \d\.\ds finished", lines[-1]), lines


def test_verbose_goes_through_sys_stderr():
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        Parallel(n_jobs=2, backend="threading", verbose=10)(delayed(h.square)(i) for i in range(4))
    assert "Done" in buf.getvalue()


@pytest.mark.parametrize(
    "backend, n_jobs", [("loky", 1), ("threading", 1), ("sequential", 2)]
)
def test_timeout_ignored_when_running_sequentially(backend, n_jobs):
    # As joblib: the caller cannot stop its own task; it warns and lets the task finish.
    with pytest.warns(UserWarning, match="does not support timeout"):
        out = Parallel(n_jobs=n_jobs, backend=backend, timeout=0.1)(
            delayed(h.sleep_and_report)(0.3) for _ in range(2)
        )
    assert out == [os.getpid()] * 2
