"""The dask backend on real local clusters (conftest.py: two one-thread workers, in this
process or in two worker processes; loopback only). The behaviour suite also runs on both
(test_behaviour.py); these are the dask backend's own promises: the cluster's size, remote
tracebacks, big arguments sent once, nested calls, cancellation, timeouts, dead workers,
and the error without dask installed."""

from __future__ import annotations

import _thread
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import joblet  # noqa: E402
from joblet import Parallel, delayed, parallel_config  # noqa: E402

import joblet_test_helpers as h  # noqa: E402

pytestmark = pytest.mark.timeout(90)

WAIT = 30  # seconds: the bound on every wait for an event below


@pytest.fixture(params=["threads", "processes"])
def client(request):
    """A client of one of the two clusters, active for the test (``get_client()``)."""
    client = request.getfixturevalue(f"dask_{request.param}_client")
    with client.as_current():
        yield client


@pytest.fixture
def threads_client(dask_threads_client):
    with dask_threads_client.as_current():
        yield dask_threads_client


def keys_on(client):
    """Every key the scheduler knows (batches, scattered arguments, results)."""

    def keys(dask_scheduler):
        return {str(k) for k in dask_scheduler.tasks}

    return client.run_on_scheduler(keys)


def wait_until_drained(client, before=frozenset()):
    """Waits until the scheduler knows no key but those of ``before`` (the keys that were
    there when the test started): the calls left nothing on the cluster."""
    deadline = time.monotonic() + WAIT
    while keys_on(client) - before:
        left = keys_on(client) - before
        assert time.monotonic() < deadline, f"left on the cluster: {sorted(left)}"
        time.sleep(0.05)


# The cluster's size, errors ---------------------------------------------------------------


def test_n_jobs_means_every_worker_thread_of_the_cluster(client, capsys):
    with parallel_config(backend="dask"):
        assert joblet.effective_n_jobs(-1) == 2
        # As in joblib, n_jobs does not limit the cluster: even 1 runs there.
        out = Parallel(n_jobs=1, verbose=10)(delayed(h.square)(i) for i in range(20))
    assert out == [i * i for i in range(20)]
    err = capsys.readouterr().err
    assert "[Parallel(n_jobs=1)]: Using backend DaskDistributedBackend with 2 concurrent workers." in err
    assert "Done  20 out of  20" in err


def test_task_exception_with_the_workers_traceback(dask_processes_client):
    with dask_processes_client.as_current(), parallel_config(backend="dask"):
        with pytest.raises(ValueError, match=r"^bad value 3$") as info:
            Parallel(n_jobs=-1)(delayed(h.raise_at)(i) for i in range(10))
    cause = info.value.__cause__
    assert isinstance(cause, joblet.RemoteTraceback)
    assert "raise_at" in str(cause) and "bad value 3" in str(cause)


def test_client_passed_explicitly_without_an_active_one(dask_threads_client):
    with parallel_config(backend="dask", client=dask_threads_client):
        assert Parallel()(delayed(h.square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def test_scheduler_host_connects_a_client(dask_processes_client):
    address = dask_processes_client.scheduler.address
    with parallel_config(backend="dask", scheduler_host=address):
        assert Parallel()(delayed(h.square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def test_a_cluster_without_workers_gets_one_or_a_clear_timeout():
    with distributed.LocalCluster(
        n_workers=0, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        with parallel_config(backend="dask", client=client, wait_for_workers_timeout=0.2):
            with pytest.raises(TimeoutError, match="has no worker after 0.2 seconds"):
                Parallel()(delayed(h.square)(i) for i in range(3))
        with parallel_config(backend="dask", client=client, wait_for_workers_timeout=0):
            with pytest.raises(RuntimeError, match="DaskDistributedBackend has no active worker"):
                Parallel()(delayed(h.square)(i) for i in range(3))
        # An adaptive cluster starts a worker for the probe task the call submits.
        cluster.adapt(minimum=0, maximum=1)
        with parallel_config(backend="dask", client=client, wait_for_workers_timeout=WAIT):
            assert Parallel()(delayed(h.square)(i) for i in range(3)) == [0, 1, 4]


def test_batches_are_named_after_their_function(threads_client, blocking):
    def keys(dask_scheduler):
        return [str(k) for k in dask_scheduler.tasks]

    with parallel_config(backend="dask"):
        gen = Parallel(batch_size=1, return_as="generator")(delayed(blocked)(i) for i in [1])
        assert STARTED.acquire(timeout=WAIT), "the task never started"
        seen = threads_client.run_on_scheduler(keys)
        GO.set()
        assert list(gen) == [1]
    # joblib's names, which Dask's dashboard groups by (the text before the last "-").
    assert any(k.startswith("batch_of_blocked_1_calls-") for k in seen), seen


def test_scatter_must_be_a_list(threads_client):
    with pytest.raises(TypeError, match="scatter must be a list or a tuple, not int"):
        parallel_config(backend="dask", scatter=3)


def run_python(code):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )


def test_no_client_says_how_to_make_one():
    done = run_python(
        "import joblet\n"
        "try:\n"
        "    joblet.parallel_config(backend='dask')\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "needs a Dask client, and none is active" in done.stdout
    assert "Client('scheduler-address:8786')" in done.stdout


def test_without_distributed_the_error_says_what_to_install():
    done = run_python(
        "import sys\n"
        "sys.modules['distributed'] = None  # as if not installed\n"
        "import joblet\n"
        "try:\n"
        "    joblet.Parallel(backend='dask')\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "ImportError: joblet's 'dask' backend needs dask.distributed" in done.stdout
    assert "pip install 'joblet[dask]'" in done.stdout


# Big arguments ------------------------------------------------------------------------------


def test_big_argument_goes_to_the_cluster_once_per_call(dask_processes_client):
    payload = h.CountedPayload(2 << 20)
    h.PICKLED["count"] = 0
    with dask_processes_client.as_current(), parallel_config(backend="dask"):
        out = Parallel(batch_size=4)(delayed(h.payload_length)(payload, i) for i in range(64))
    assert out == [(2 << 20) + i for i in range(64)]
    assert h.PICKLED["count"] == 1, "the payload went with more than one batch"


def test_big_keyword_argument_is_shared_too(dask_processes_client):
    small, big = h.CountedPayload(10), h.CountedPayload(2 << 20)
    h.PICKLED["count"] = 0
    with dask_processes_client.as_current(), parallel_config(backend="dask"):
        out = Parallel(batch_size=2)(
            delayed(h.payload_length)(small, i, extra=big) for i in range(16)
        )
    assert out == [10 + (2 << 20) + i for i in range(16)]
    # The small one travels with each of the 8 batches, the big one once.
    assert h.PICKLED["count"] == 8 + 1


def test_max_nbytes_none_sends_arguments_with_each_batch(dask_processes_client):
    payload = h.CountedPayload(2 << 20)
    h.PICKLED["count"] = 0
    with dask_processes_client.as_current(), parallel_config(backend="dask"):
        out = Parallel(batch_size=4, max_nbytes=None)(
            delayed(h.payload_length)(payload, i) for i in range(16)
        )
    assert out == [(2 << 20) + i for i in range(16)]
    assert h.PICKLED["count"] == 4


def test_shared_numpy_array_is_scattered_once(client, monkeypatch):
    before = keys_on(client)
    calls = []
    real = client.scatter

    def counting_scatter(data, *args, **kwargs):
        calls.append(type(data).__name__)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(client, "scatter", counting_scatter)
    a = np.arange(1 << 20, dtype=np.float64)  # 8 MiB
    with parallel_config(backend="dask", client=client):
        out = Parallel(batch_size=2)(delayed(h.array_sum)(a) for _ in range(64))
    assert out == [float(a.sum())] * 64
    assert calls == ["ndarray"]
    del a
    wait_until_drained(client, before)


def test_tasks_get_a_read_only_view_of_a_shared_array(client):
    a = np.ones(1 << 18)  # 2 MiB: shared
    with parallel_config(backend="dask"):
        with pytest.raises(ValueError, match="read-only"):
            Parallel(batch_size=1)(delayed(h.double_in_place)(a) for _ in range(4))
    assert (a == 1).all()


def test_fresh_big_arguments_leave_the_cluster_as_the_call_goes(dask_processes_client):
    # One new 2 MiB array per task, two batches in flight: the cluster holds the arrays of
    # the batches in flight, not every array the call has made so far. (Not on in-process
    # workers: there the worker holds the caller's object itself, which so never dies, and
    # the call releases them all when it ends.)
    client = dask_processes_client
    before = keys_on(client)
    most = 0
    with parallel_config(backend="dask", client=client):
        gen = Parallel(batch_size=1, pre_dispatch=2, return_as="generator")(
            delayed(h.array_sum)(np.full(1 << 18, float(i))) for i in range(24)
        )
        for i, value in enumerate(gen):
            assert value == float(i) * (1 << 18)
            most = max(most, len(keys_on(client) - before))
    assert most <= 6, f"up to {most} keys on the cluster at once"
    wait_until_drained(client, before)


def test_scattered_bytes_are_not_sent_with_each_batch(client, monkeypatch):
    blob = bytes(4 << 20)
    sent = []
    real = client.submit

    def recording_submit(func, *args, **kwargs):
        sent.append(len(args[0]) if args and isinstance(args[0], bytes) else 0)
        return real(func, *args, **kwargs)

    monkeypatch.setattr(client, "submit", recording_submit)
    with parallel_config(backend="dask", client=client, scatter=[blob]):
        out = Parallel(batch_size=2)(delayed(len)(blob) for _ in range(8))
    assert out == [4 << 20] * 8
    assert len(sent) == 4 and max(sent) < 100_000, sent


def test_futures_inside_a_list_argument_are_given_as_their_values(client):
    parts = client.scatter([1, 2, 3])
    with parallel_config(backend="dask"):
        assert Parallel()(delayed(sum)(parts) for _ in range(3)) == [6, 6, 6]


def test_two_generators_of_one_configuration_at_once(client):
    with parallel_config(backend="dask"):
        first = Parallel(batch_size=1, return_as="generator")(delayed(h.square)(i) for i in range(20))
        second = Parallel(batch_size=1, return_as="generator")(delayed(h.add)(i, y=1) for i in range(20))
        assert [a + b for a, b in zip(first, second)] == [i * i + i + 1 for i in range(20)]


def test_two_generators_one_closed_early(client):
    with parallel_config(backend="dask"):
        first = Parallel(batch_size=1, return_as="generator")(delayed(h.square)(i) for i in range(20))
        second = Parallel(batch_size=1, return_as="generator")(delayed(h.square)(i) for i in range(20))
        assert next(first) == 0
        first.close()
        assert list(second) == [i * i for i in range(20)]


def test_a_users_own_futures_are_given_as_their_values(client):
    five = client.scatter(5)
    with parallel_config(backend="dask"):
        out = Parallel(batch_size=3)(delayed(h.add)(five, y=i, z=five) for i in range(7))
    assert out == [10 + i for i in range(7)]


def test_scatter_broadcasts_up_front_and_once(dask_processes_client):
    payload = h.CountedPayload(1000)  # small: shared only because it is named
    h.PICKLED["count"] = 0
    with dask_processes_client.as_current():
        with parallel_config(backend="dask", scatter=[payload]):
            assert h.PICKLED["count"] == 1
            for _ in range(2):
                out = Parallel(batch_size=2)(delayed(h.payload_length)(payload, i) for i in range(8))
                assert out == [1000 + i for i in range(8)]
    assert h.PICKLED["count"] == 1


# Nesting --------------------------------------------------------------------------------------


def test_a_task_waiting_on_two_nested_calls_at_once(client):
    with parallel_config(backend="dask"):
        out = Parallel(batch_size=1)(delayed(h.nested_generator_and_list)(n) for n in (2, 3))
    assert out == [sum(j * j + 2 * (j * j + 1) for j in range(n)) for n in (2, 3)]


def test_nested_calls_on_workers_complete(client):
    # Four outer tasks on two worker threads, each waiting for four inner one-task batches:
    # without secede/rejoin, the outer tasks would hold both threads and wait forever.
    with parallel_config(backend="dask"):
        out = Parallel(batch_size=1)(delayed(h.nested_dask_sum)(n) for n in range(1, 5))
    assert out == [sum(j * j for j in range(n)) for n in range(1, 5)]


# Cancellation ---------------------------------------------------------------------------------

# In-process workers (threads_client): the tasks below share these with the test.
STARTED = threading.Semaphore(0)
GO = threading.Event()
RAN: list[int] = []


def blocked(i):
    """Records that it ran, says so, and (all but task 0) waits for the test's go."""
    RAN.append(i)
    STARTED.release()
    if i != 0:
        assert GO.wait(WAIT), "the test never said go"
    return i


def fail_first(i):
    if i == 0:
        raise KeyError("first")
    return blocked(i)


@pytest.fixture
def blocking():
    RAN.clear()
    GO.clear()
    while STARTED.acquire(blocking=False):
        pass
    yield
    GO.set()  # whatever happened, nothing stays blocked


# In the tests below, the tasks that started wait until the scheduler has forgotten every
# batch; only then may they end. The two worker threads can have started one task each
# (two more if a worker took its next task before the cancellation reached it), never the
# forty.


def test_first_failure_cancels_the_rest(threads_client, blocking):
    before = keys_on(threads_client)
    with parallel_config(backend="dask"):
        with pytest.raises(KeyError, match="first"):
            Parallel(batch_size=1, pre_dispatch="all")(delayed(fail_first)(i) for i in range(40))
    wait_until_drained(threads_client, before)
    GO.set()
    assert len(RAN) <= 4, RAN


def test_dropped_generator_cancels_the_rest(threads_client, blocking):
    before = keys_on(threads_client)
    with parallel_config(backend="dask"):
        gen = Parallel(batch_size=1, pre_dispatch="all", return_as="generator")(
            delayed(blocked)(i) for i in range(40)
        )
        assert next(gen) == 0
        del gen
    wait_until_drained(threads_client, before)
    GO.set()
    assert len(RAN) <= 4, RAN


def test_timeout_cancels_and_raises(threads_client, blocking):
    before = keys_on(threads_client)
    with parallel_config(backend="dask"):
        started = time.monotonic()
        with pytest.raises(multiprocessing.TimeoutError, match="still running after the timeout"):
            Parallel(batch_size=1, pre_dispatch="all", timeout=0.5)(
                delayed(blocked)(i) for i in range(40)
            )
        assert time.monotonic() - started < WAIT
    wait_until_drained(threads_client, before)
    GO.set()
    assert len(RAN) <= 4, RAN


def test_ctrl_c_cancels_and_raises(threads_client, blocking):
    before = keys_on(threads_client)
    def interrupt_once_running():
        if STARTED.acquire(timeout=WAIT):
            _thread.interrupt_main()

    interrupter = threading.Thread(target=interrupt_once_running)
    interrupter.start()
    try:
        with parallel_config(backend="dask"), pytest.raises(KeyboardInterrupt):
            Parallel(batch_size=1, pre_dispatch="all")(delayed(blocked)(i) for i in range(40))
    finally:
        interrupter.join(WAIT)
    wait_until_drained(threads_client, before)
    GO.set()
    assert len(RAN) <= 4, RAN


# Dead workers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fragile_client():
    """A cluster of two worker processes whose scheduler gives up on a task after it has
    killed one worker (distributed.scheduler.allowed-failures = 1)."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


def test_killed_worker_is_retried_on_another(fragile_client, tmp_path):
    marker = str(tmp_path / "killed-once")
    with fragile_client.as_current(), parallel_config(backend="dask"):
        out = Parallel(batch_size=1)(
            [delayed(h.square)(2), delayed(h.kill_worker_once)(marker), delayed(h.square)(3)]
        )
    assert out == [4, "survived", 9]
    assert os.path.exists(marker)


def test_task_that_always_kills_its_worker_raises_terminated_worker_error(fragile_client):
    fragile_client.wait_for_workers(2, timeout=WAIT)  # (the test above killed one)
    with fragile_client.as_current(), parallel_config(backend="dask"):
        with pytest.raises(joblet.TerminatedWorkerError, match="died while running it") as info:
            Parallel(batch_size=1)(delayed(h.kill_worker)(i) for i in range(2))
        assert isinstance(info.value.__cause__, distributed.scheduler.KilledWorker)
        fragile_client.wait_for_workers(2, timeout=WAIT)
        # The cluster replaced its workers: the next call works.
        assert Parallel()(delayed(h.square)(i) for i in range(6)) == [i * i for i in range(6)]


# The same call on joblib's dask backend and on joblet's --------------------------------------


def test_results_match_joblibs_dask_backend(dask_processes_client):
    joblib = pytest.importorskip("joblib")
    tasks = [(h.add, (i,), {"y": 2, "z": i}) for i in range(200)]
    with dask_processes_client.as_current():
        with joblib.parallel_config(backend="dask"):
            expected = joblib.Parallel()(tasks)
        with parallel_config(backend="dask"):
            assert Parallel()(tasks) == expected


def test_a_one_thread_cluster_still_runs_the_tasks():
    # joblib would run a call with one worker in the caller; the cluster is where the user
    # asked the tasks to run (a crash there must not take the caller down).
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster, distributed.Client(cluster, set_as_default=False) as one:
        with parallel_config(backend="dask", client=one):
            pids = Parallel()(delayed(h.getpid)(i) for i in range(4))
    assert len(set(pids)) == 1 and pids[0] != os.getpid()
