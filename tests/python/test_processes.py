"""Worker processes: crashes at every stage of a task, timeouts, pickling errors, big arrays,
and no worker left behind."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

import joblet
from joblet import Parallel, TerminatedWorkerError, delayed

import joblet_test_helpers as h

pytestmark = pytest.mark.timeout(90)

N_JOBS = 2
CRASH_INDEX = 2
N_TASKS = 5


# Processes of this test process, from /proc ----------------------------------------------


def _stat(pid):
    """(state, ppid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_children():
    """The joblet worker processes whose parent is this process, zombies included (a worker
    that died and was never reaped is a leak too): {pid: state}."""
    me = os.getpid()
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        st = _stat(pid)
        if st is None or st[1] != me:
            continue
        state = st[0]
        # A zombie has an empty cmdline: count every zombie child, and live ones that run
        # joblet's worker.
        if state == "Z" or "joblet._worker" in _cmdline(pid):
            out[pid] = state
    return out


def wait_until(predicate, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def assert_pool_works():
    out = Parallel(n_jobs=N_JOBS)(delayed(h.square)(i) for i in range(10))
    assert out == [i * i for i in range(10)]
    pids = Parallel(n_jobs=N_JOBS)(delayed(h.getpid)(i) for i in range(4))
    assert os.getpid() not in pids


# Crash matrix ------------------------------------------------------------------------------

PHASES = ["running", "unpickling_reduce", "unpickling_setstate", "pickling_result"]


def crash_tasks(phase, mode, backend="loky"):
    me = os.getpid()
    if phase == "running":
        return [delayed(h.crash_at)(i, CRASH_INDEX, mode, me) for i in range(N_TASKS)]
    if phase == "unpickling_reduce":
        return [
            delayed(h.take_arg)(i, h.CrashOnReduce(mode, me) if i == CRASH_INDEX else None)
            for i in range(N_TASKS)
        ]
    if phase == "unpickling_setstate":
        return [
            delayed(h.take_arg)(i, h.CrashOnSetstate(mode, me) if i == CRASH_INDEX else None)
            for i in range(N_TASKS)
        ]
    if phase == "pickling_result":
        return [delayed(h.crash_result_at)(i, CRASH_INDEX, mode, me) for i in range(N_TASKS)]
    raise AssertionError(phase)


EXPECTED_END = {
    "exit": ("exit code 3",),
    "SIGSEGV": ("SIGSEGV", "signal 11"),
    "SIGKILL": ("SIGKILL", "signal 9"),
}


def check_terminated(exc, mode):
    assert isinstance(exc, TerminatedWorkerError)
    assert isinstance(exc, BrokenProcessPool)
    assert isinstance(exc, RuntimeError)
    message = str(exc)
    assert f"task {CRASH_INDEX}" in message, message
    assert any(word in message for word in EXPECTED_END[mode]), message


@pytest.mark.parametrize("mode", h.CRASH_MODES)
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("batch_size", [1, "auto"])
def test_crash_raises_terminated_worker_error(phase, mode, batch_size):
    with pytest.raises(TerminatedWorkerError) as info:
        Parallel(n_jobs=N_JOBS, batch_size=batch_size)(crash_tasks(phase, mode))
    check_terminated(info.value, mode)
    assert_pool_works()


@pytest.mark.parametrize("bad", [0, 150, 199])
def test_crash_names_the_task_among_many_batched_tasks(bad):
    me = os.getpid()
    with pytest.raises(TerminatedWorkerError, match=rf"task {bad}\b"):
        Parallel(n_jobs=N_JOBS)(delayed(h.crash_at)(i, bad, "SIGKILL", me) for i in range(200))
    assert_pool_works()


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_crash_in_generator_mode(backend, return_as):
    gen = Parallel(n_jobs=N_JOBS, backend=backend, return_as=return_as)(
        crash_tasks("running", "SIGKILL")
    )
    with pytest.raises(TerminatedWorkerError) as info:
        list(gen)
    check_terminated(info.value, "SIGKILL")
    assert_pool_works()


def test_crash_on_multiprocessing_backend():
    with pytest.raises(TerminatedWorkerError) as info:
        Parallel(n_jobs=N_JOBS, backend="multiprocessing")(crash_tasks("running", "exit"))
    check_terminated(info.value, "exit")
    out = Parallel(n_jobs=N_JOBS, backend="multiprocessing")(delayed(h.square)(i) for i in range(5))
    assert out == [i * i for i in range(5)]


@pytest.mark.timeout(120)
def test_no_worker_left_behind_across_crashes():
    assert_pool_works()
    baseline = len(worker_children())
    bound = max(baseline, N_JOBS)
    assert baseline <= max(N_JOBS, joblet.cpu_count())
    for iteration, (phase, mode) in enumerate(
        [
            ("running", "exit"),
            ("running", "SIGSEGV"),
            ("unpickling_reduce", "SIGKILL"),
            ("pickling_result", "exit"),
            ("unpickling_setstate", "SIGSEGV"),
        ]
    ):
        with pytest.raises(TerminatedWorkerError):
            Parallel(n_jobs=N_JOBS)(crash_tasks(phase, mode))
        assert_pool_works()
        count = wait_until(lambda: len(worker_children()) <= bound, timeout=5)
        children = worker_children()
        assert count and len(children) <= bound, (
            f"iteration {iteration}: {len(children)} worker children {children}, "
            f"expected at most {bound}"
        )
        zombies = [pid for pid, state in children.items() if state == "Z"]
        assert not zombies, f"dead workers not reaped: {zombies}"


# Failures that are exceptions, not crashes -----------------------------------------------


def test_argument_whose_unpickling_raises():
    with pytest.raises(KeyError, match="setstate failed"):
        Parallel(n_jobs=N_JOBS)(
            delayed(h.take_arg)(i, h.FailOnSetstate() if i == 1 else None) for i in range(4)
        )
    assert_pool_works()


def test_result_that_cannot_be_pickled():
    with pytest.raises(TypeError, match="cannot be pickled"):
        Parallel(n_jobs=N_JOBS)(delayed(h.fail_result_at)(i, 1) for i in range(4))
    assert_pool_works()


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_unpicklable_argument_raises_pickling_error(backend):
    lock = threading.Lock()
    with pytest.raises(pickle.PicklingError, match=r"task 1\b"):
        Parallel(n_jobs=N_JOBS, backend=backend)(
            delayed(h.take_arg)(i, lock if i == 1 else None) for i in range(4)
        )
    assert_pool_works()


def test_unpicklable_argument_among_many_tasks_names_its_task():
    lock = threading.Lock()
    with pytest.raises(pickle.PicklingError, match=r"task 150\b"):
        Parallel(n_jobs=N_JOBS)(
            delayed(h.take_arg)(i, lock if i == 150 else None) for i in range(200)
        )
    assert_pool_works()


def test_unpicklable_function_raises_pickling_error():
    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    with pytest.raises(pickle.PicklingError, match=r"task 0\b"):
        Parallel(n_jobs=N_JOBS)(delayed(uses_lock)(i) for i in range(3))
    # The same closure is fine on threads.
    assert Parallel(n_jobs=N_JOBS, backend="threading")(delayed(uses_lock)(i) for i in range(3)) == [0, 1, 2]
    assert_pool_works()


def test_unpicklable_argument_is_fine_on_threads():
    lock = threading.Lock()
    out = Parallel(n_jobs=N_JOBS, backend="threading")(
        delayed(h.take_arg)(i, lock) for i in range(4)
    )
    assert out == [0, 1, 2, 3]


# Timeout -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_timeout_kills_the_stuck_worker(tmp_path, backend):
    # Start the workers first, so that the timeout measures the task, not process starts.
    before = Parallel(n_jobs=N_JOBS, backend=backend)(delayed(h.getpid)(i) for i in range(4))
    assert os.getpid() not in before
    pid_file = str(tmp_path / "stuck.pid")
    start = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError):
        Parallel(n_jobs=N_JOBS, backend=backend, timeout=1)(
            delayed(h.sleep_and_report)(30 if i == 1 else 0, pid_file if i == 1 else None)
            for i in range(3)
        )
    elapsed = time.monotonic() - start
    assert elapsed < 5, f"the timeout of 1 s took {elapsed:.1f} s to fire"
    assert os.path.exists(pid_file), "the stuck task never started"
    stuck = int(open(pid_file).read())
    assert stuck != os.getpid()
    gone = wait_until(lambda: _stat(stuck) is None, timeout=5)
    assert gone, f"the stuck worker {stuck} is still there: {_stat(stuck)}"
    # The next call works, on live workers.
    after = Parallel(n_jobs=N_JOBS, backend=backend)(delayed(h.getpid)(i) for i in range(4))
    assert stuck not in after
    assert os.getpid() not in after
    assert_pool_works()


@pytest.mark.timeout(60)
def test_timeout_in_generator_mode(tmp_path):
    gen = Parallel(n_jobs=N_JOBS, timeout=1, return_as="generator")(
        delayed(h.sleep_and_report)(30 if i == 0 else 0) for i in range(3)
    )
    start = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError):
        list(gen)
    assert time.monotonic() - start < 5
    assert_pool_works()


@pytest.mark.timeout(60)
def test_timeout_not_reached():
    out = Parallel(n_jobs=N_JOBS, timeout=10)(delayed(h.sleep_and_report)(0.05) for i in range(4))
    assert len(out) == 4


# Big arrays --------------------------------------------------------------------------------

BIG = 1_000_000  # float64: 8 MB


@pytest.mark.parametrize("backend", ["loky", "multiprocessing", "threading"])
def test_big_arrays_both_ways(backend):
    rng = np.random.default_rng(0)
    arrays = [rng.random(BIG) for _ in range(3)]
    assert arrays[0].nbytes == 8 * BIG
    out = Parallel(n_jobs=N_JOBS, backend=backend)(delayed(h.double)(a) for a in arrays)
    assert len(out) == 3
    for a, b in zip(arrays, out):
        assert b.shape == a.shape and b.dtype == a.dtype
        np.testing.assert_array_equal(b, a * 2)


def test_big_results():
    out = Parallel(n_jobs=N_JOBS)(delayed(h.make_array)(BIG, float(i)) for i in range(4))
    for i, a in enumerate(out):
        assert a.nbytes == 8 * BIG
        assert a.dtype == np.float64
        assert a.flags.aligned and a.flags.writeable
        assert np.all(a == float(i))
    # Results are the caller's own arrays: writable.
    out[0][:] = 5.0
    assert np.all(out[0] == 5.0)


@pytest.mark.parametrize("size", [10, 100_000, BIG])
def test_received_arrays_are_writable_and_private(size):
    original = np.arange(size, dtype=np.float64)
    keep = original.copy()
    out = Parallel(n_jobs=N_JOBS)(delayed(h.scribble)(original) for _ in range(3))
    for writeable, aligned, total, pid in out:
        assert writeable and aligned
        assert total == -1.0 * size
        assert pid != os.getpid()
    np.testing.assert_array_equal(original, keep)


def test_array_views_and_dtypes_round_trip():
    base = np.arange(2 * BIG, dtype=np.int64).reshape(1000, -1)
    items = [base[:, ::2], base.T, np.asfortranarray(base), base.astype(np.float32)]
    out = Parallel(n_jobs=N_JOBS)(delayed(h.double)(a) for a in items)
    for a, b in zip(items, out):
        assert b.dtype == a.dtype and b.shape == a.shape
        np.testing.assert_array_equal(b, a * 2)


# Where tasks run ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_tasks_run_in_other_processes(backend):
    pids = Parallel(n_jobs=N_JOBS, backend=backend)(delayed(h.getpid)(i) for i in range(8))
    assert os.getpid() not in pids
    workers = set(worker_children())
    assert set(pids) <= workers, f"task pids {set(pids)} are not worker children {workers}"


def test_n_jobs_1_runs_in_the_caller():
    pids = Parallel(n_jobs=1)(delayed(h.getpid)(i) for i in range(3))
    assert pids == [os.getpid()] * 3


# Exact round trips -------------------------------------------------------------------------

ROUND_TRIP_CASES = [
    (1, -2**70, 1.5, float("inf"), 2j, True, None, "é\ud800", b"\x00\xff"),  # plain
    ((1, [2, {3: "x", "k": (None,)}]),),  # plain, nested
    (h.Colour.GREEN, h.Name("n"), np.float64(2.5), np.int32(3)),  # subclasses, numpy scalars
    ([1, 2, h.Colour.RED],),  # plain container around a subclass
    (list(range(5000)),),  # larger than the plain-data walk looks at
]


@pytest.mark.parametrize("args", ROUND_TRIP_CASES, ids=range(len(ROUND_TRIP_CASES)))
def test_arguments_and_results_keep_their_exact_types(args):
    kwargs = {"key": args[0]}
    [(names, keys, back)] = Parallel(n_jobs=N_JOBS)(delayed(h.describe)(*args, **kwargs) for _ in range(1))
    assert names == [type(a).__name__ for a in args]
    assert keys == ["key"]
    got_args, got_kwargs = back
    assert [type(a) for a in got_args] == [type(a) for a in args]
    assert type(got_kwargs["key"]) is type(args[0])
    # nan-free cases: compare by value as well as by type
    assert got_args == args and got_kwargs == kwargs


@pytest.mark.parametrize(
    "inner", [[1, 2], (1, 2), b"x" * 100_000, "y" * 1000], ids=["list", "tuple", "bytes", "str"]
)
def test_shared_references_stay_shared(inner):
    # Also the size: one copy of a shared 100 KB bytes, not one per reference.
    [(_, _, ((outer,), _))] = Parallel(n_jobs=N_JOBS)(delayed(h.describe)([inner] * 50) for _ in range(1))
    assert outer == [inner] * 50
    assert all(x is outer[0] for x in outer)


# Functions travel once per batch ------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, "auto"])
def test_batches_mixing_functions_call_each_tasks_own(batch_size):
    import functools

    def pick(i):
        if i % 5 == 0:
            return delayed(functools.partial(h.add, y=i))(i)  # a new callable per task
        return delayed(h.square if i % 2 else h.add)(i, *(() if i % 2 else (1,)))

    out = Parallel(n_jobs=N_JOBS, batch_size=batch_size)(pick(i) for i in range(200))
    expected = [i + i if i % 5 == 0 else (i * i if i % 2 else i + 1) for i in range(200)]
    assert out == expected


# Worker environment ------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_inner_max_num_threads_and_later_env_changes_reach_the_workers(monkeypatch):
    share = str(max(joblet.cpu_count() // N_JOBS, 1))

    def seen():
        # The values the tasks saw, and the pool's workers after the call (which of them ran
        # the tasks is up to timing).
        out = Parallel(n_jobs=N_JOBS, batch_size=1)(delayed(h.thread_vars)(i) for i in range(4))
        pool = {pid for pid, state in worker_children().items() if state != "Z"}
        assert {pid for _, _, pid in out} <= pool
        return {(omp, blas) for omp, blas, _ in out}, pool

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    values, pids = seen()
    assert values == {(share, share)}
    assert seen() == (values, pids), "identical calls must reuse the same workers"
    with joblet.parallel_config(backend="loky", inner_max_num_threads=3):
        values, pids3 = seen()
    assert values == {("3", "3")}
    assert not pids3 & pids
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    values, pids5 = seen()
    assert values == {("5", share)}
    assert not pids5 & pids3


@pytest.mark.timeout(120)
def test_manager_proxies_work_in_process_tasks():
    with multiprocessing.Manager() as manager:
        queue = manager.Queue()
        out = Parallel(n_jobs=N_JOBS)(delayed(h.put)(queue, i) for i in range(6))
        assert out == list(range(6))
        assert sorted(queue.get(timeout=10) for _ in range(6)) == list(range(6))


# np.memmap arguments -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["r+", "w+", "c", "r"])
def test_memmap_arguments_travel_by_reference(tmp_path, mode):
    path = tmp_path / "data.bin"
    np.arange(1000, dtype=np.float64).tofile(path)
    if mode == "w+":
        m = np.memmap(path, dtype=np.float64, mode="w+", shape=(1000,))
        m[:] = np.arange(1000)
    else:
        m = np.memmap(path, dtype=np.float64, mode=mode, shape=(1000,))
    parts = [m, m[500:], m.reshape(10, 100)[2:4]]  # the whole, a tail view, a 2-D block
    calls = [delayed(h.write_first)(parts[0], -7.0), delayed(h.write_first)(a=parts[1], value=-7.0),
             delayed(h.write_first)(parts[2], value=-7.0)]  # positional and keyword arguments
    out = Parallel(n_jobs=N_JOBS)(calls)
    # Copy-on-write mappings travel by value: the caller's private writes are in no file.
    assert [mapped for mapped, _, _ in out] == [mode != "c"] * 3
    assert [last for _, _, last in out] == [999.0, 999.0, 399.0]
    assert all(w == (mode != "r") for _, w, _ in out)
    if mode == "c":
        m[1] = -1.0  # a private write of the caller's: a worker must see it
        [(_, _, last)] = Parallel(n_jobs=N_JOBS)(delayed(h.write_first)(p, 0.0) for p in [m[:2]])
        assert last == -1.0
    fresh = np.fromfile(path, dtype=np.float64)
    if mode in ("r+", "w+"):
        # Written through the worker's mapping of the same file.
        assert (fresh[0], fresh[500], fresh[200]) == (-7.0, -7.0, -7.0)
        assert m[0] == -7.0
    else:
        assert (fresh[0], fresh[500], fresh[200]) == (0.0, 500.0, 200.0)


def test_non_contiguous_memmap_views_travel_by_value(tmp_path):
    path = tmp_path / "data.bin"
    np.arange(100, dtype=np.float64).tofile(path)
    m = np.memmap(path, dtype=np.float64, mode="r+", shape=(100,))
    [(mapped, writable, last)] = Parallel(n_jobs=N_JOBS)(delayed(h.write_first)(p, -1.0) for p in [m[::2]])
    assert (mapped, writable, last) == (False, True, 98.0)
    assert m[0] == 0.0, "a copy must not write to the caller's file"


# Worker initializers -----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_initializer_runs_in_every_worker_and_same_ones_reuse_workers():
    def run(value):
        return Parallel(n_jobs=N_JOBS, batch_size=1, initializer=h.remember, initargs=(value,))(
            delayed(h.initialized)(i) for i in range(6)
        )

    def pool():
        return {pid for pid, state in worker_children().items() if state != "Z"}

    first = run("a")
    assert {v for v, _ in first} == {"a"}
    workers = pool()
    again = run("a")
    assert {v for v, _ in again} == {"a"}
    assert pool() == workers, "same initializer: same workers"
    other = run("b")
    assert {v for v, _ in other} == {"b"}
    assert not pool() & workers, "other initargs: new workers"
    with joblet.parallel_config(backend="loky", initializer=h.remember, initargs=("c",)):
        assert {v for v, _ in Parallel(n_jobs=N_JOBS)(delayed(h.initialized)(i) for i in range(4))} == {"c"}
    # A call without an initializer does not get initialized workers.
    assert {v for v, _ in Parallel(n_jobs=N_JOBS)(delayed(h.initialized)(i) for i in range(4))} == {None}


@pytest.mark.timeout(120)
def test_a_failing_initializer_fails_the_call_clearly_and_the_next_call_works():
    # joblib raises TerminatedWorkerError (a RuntimeError) too; the worker's stderr has the
    # initializer's traceback, and its exit code is 3.
    with pytest.raises(TerminatedWorkerError, match="did not start.*standard error says why.*exit"):
        Parallel(n_jobs=N_JOBS, initializer=h.refuse_to_start)(delayed(h.square)(i) for i in range(4))
    assert Parallel(n_jobs=N_JOBS)(delayed(h.square)(i) for i in range(4)) == [0, 1, 4, 9]


def test_initializer_on_threads_is_refused_by_name():
    with pytest.raises(TypeError, match="initializer is for process backends"):
        Parallel(n_jobs=2, backend="threading", initializer=h.remember, initargs=(1,))


@pytest.mark.parametrize("batch_size", [1, 5, "auto"])
def test_many_functions_in_one_call_each_run_their_own(batch_size):
    # More distinct functions than joblet keeps by id on either side (ids are then sent
    # again): each task still runs its own function.
    import functools

    functions = [functools.partial(h.add, y=k) for k in range(150)]
    order = [(i * 7) % 150 for i in range(600)]
    out = Parallel(n_jobs=N_JOBS, batch_size=batch_size)(delayed(functions[k])(1000) for k in order)
    assert out == [1000 + k for k in order]


# Arguments in shared segments --------------------------------------------------------------


@pytest.mark.timeout(120)
def test_arrays_kept_past_their_task_keep_their_values_when_segments_are_reused():
    # Big arguments travel in shared segments that the caller reuses for later tasks; a
    # worker that kept an array (copy-on-write view) must not see the later contents.
    n = 200_000  # 1.6 MB: above the segment threshold
    first = [np.full(n, float(k)) for k in range(4)]
    pids = Parallel(n_jobs=N_JOBS, batch_size=1)(delayed(h.keep)(a) for a in first)
    later = [np.full(n, -1.0) for _ in range(16)]
    Parallel(n_jobs=N_JOBS, batch_size=1)(delayed(h.array_sum)(a) for a in later)
    seen = Parallel(n_jobs=N_JOBS, batch_size=1)(delayed(h.kept_sums)(i) for i in range(8))
    kept = {pid: sums for sums, pid in seen}
    expected = sorted(float(k) * n for k in range(4))
    assert sorted(s for pid in set(pids) for s in kept.get(pid, [])) == expected


@pytest.mark.timeout(120)
def test_segments_leave_no_descriptors_behind():
    big = [np.full(300_000, float(k)) for k in range(8)]

    def fds():
        out = Parallel(n_jobs=N_JOBS, batch_size=1)(delayed(h.open_fds)(i) for i in range(8))
        return {pid: n for n, pid in out}, len(os.listdir("/proc/self/fd"))

    Parallel(n_jobs=N_JOBS)(delayed(h.array_sum)(a) for a in big)
    workers, caller = fds()
    for _ in range(10):
        Parallel(n_jobs=N_JOBS)(delayed(h.array_sum)(a) for a in big)
        now_workers, now_caller = fds()
        # Workers close every segment after its batch: a worker's count never changes (a
        # worker that served none of the 8 tasks of a call is simply not in its answer).
        for pid, n in now_workers.items():
            assert workers.setdefault(pid, n) == n, f"worker {pid}: {n} descriptors now"
        # The caller keeps at most 16 spare segments (each an open memfd), and no more.
        assert caller <= now_caller <= caller + 16


@pytest.mark.timeout(120)
def test_more_big_arguments_than_segments_under_a_low_open_file_limit():
    # Each big argument in flight holds a segment (an open descriptor); past the cap the
    # copies travel in the frame instead of failing with "Too many open files".
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        arrays = [np.full(20_000, float(k)) for k in range(600)]  # 160 KB each
        out = Parallel(n_jobs=N_JOBS, batch_size=300)(delayed(h.array_sum)(a) for a in arrays)
        assert out == [20_000.0 * k for k in range(600)]
        [total] = Parallel(n_jobs=N_JOBS)(delayed(h.sum_all)(*arrays[:300]) for _ in range(1))
        assert total == 20_000.0 * sum(range(300))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(120)
def test_a_child_forked_by_a_task_keeps_the_values_it_was_given(tmp_path):
    n = 200_000
    ready, go = tmp_path / "ready", tmp_path / "go"
    # In a worker (one task, two jobs: a process call with one worker), a task forks a child
    # that reads its argument later; then the caller reuses the segments for other data.
    [child] = Parallel(n_jobs=N_JOBS, batch_size=1)(
        delayed(h.fork_and_read_later)(np.full(n, 1.0), str(ready), str(go)) for _ in range(1)
    )
    assert child not in (os.getpid(), None)
    Parallel(n_jobs=N_JOBS, batch_size=1)(delayed(h.array_sum)(np.full(n, -5.0)) for _ in range(8))
    go.touch()
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert float(ready.read_text()) == float(n)
