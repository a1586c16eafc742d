"""Task functions and classes for joblet's tests.

They live in an importable module (not in the test files) so that worker processes import
them by reference, as joblib users' own modules are. Everything that kills a process takes the
pid of the test process and refuses to kill it: a bug that ran such a task in the caller must
fail a test, not end the test session.
"""

from __future__ import annotations

import enum
import os
import signal
import threading
import time

import numpy as np


# Plain tasks -------------------------------------------------------------------------------


def square(x):
    return x * x


def add(x, y=0, *, z=0):
    return x + y + z


def raise_at(i, bad=3):
    if i == bad:
        raise ValueError(f"bad value {i}")
    return i


class CustomError(Exception):
    """An exception whose ``__init__`` takes other arguments than its ``args``."""

    def __init__(self, code, detail):
        super().__init__(f"error {code}: {detail}")
        self.code = code
        self.detail = detail


def raise_custom_at(i, bad=3):
    if i == bad:
        raise CustomError(i, "custom detail")
    return i


def getpid(*_):
    return os.getpid()


def where(*_):
    """The process and the thread a task runs in."""
    return os.getpid(), threading.get_ident()


def wait_barrier(barrier, timeout=20):
    """Returns only when as many tasks as the barrier's parties wait at the same time: proof
    that they run concurrently (a BrokenBarrierError otherwise)."""
    barrier.wait(timeout)
    return os.getpid(), threading.get_ident()


# Crashes -----------------------------------------------------------------------------------

CRASH_MODES = ("exit", "SIGSEGV", "SIGKILL")


def crash_now(mode, protected_pid):
    """Ends this process abruptly (os._exit(3), SIGSEGV or SIGKILL), unless it is the test
    process itself."""
    if os.getpid() == protected_pid:
        raise RuntimeError(f"crash task ran in the test process (pid {protected_pid})")
    if mode == "exit":
        os._exit(3)
    os.kill(os.getpid(), getattr(signal, mode))
    time.sleep(10)  # the signal is delivered before this ends
    os._exit(99)


def crash_at(i, bad, mode, protected_pid):
    if i == bad:
        crash_now(mode, protected_pid)
    return i


class CrashOnReduce:
    """Unpickling it (in the worker) calls ``crash_now``: a crash while the task's arguments
    are being rebuilt."""

    def __init__(self, mode, protected_pid):
        self.mode = mode
        self.protected_pid = protected_pid

    def __reduce__(self):
        return crash_now, (self.mode, self.protected_pid)


class CrashOnSetstate:
    """Unpickling it (in the worker) crashes in ``__setstate__``."""

    def __init__(self, mode, protected_pid):
        self.mode = mode
        self.protected_pid = protected_pid

    def __getstate__(self):
        return {"mode": self.mode, "protected_pid": self.protected_pid}

    def __setstate__(self, state):
        crash_now(state["mode"], state["protected_pid"])


class CrashWhenPickled:
    """Pickling it (the worker sending it back as a result) crashes the worker."""

    def __init__(self, mode, protected_pid):
        self.mode = mode
        self.protected_pid = protected_pid

    def __reduce__(self):
        crash_now(self.mode, self.protected_pid)
        raise AssertionError("unreachable")


def take_arg(i, _arg=None):
    return i


def crash_result_at(i, bad, mode, protected_pid):
    if i == bad:
        return CrashWhenPickled(mode, protected_pid)
    return i


class FailOnSetstate:
    """Unpickling it raises (an exception, not a crash)."""

    def __getstate__(self):
        return {"x": 1}

    def __setstate__(self, state):
        raise KeyError("setstate failed in the worker")


class FailWhenPickled:
    def __reduce__(self):
        raise TypeError("this result cannot be pickled")


def fail_result_at(i, bad):
    if i == bad:
        return FailWhenPickled()
    return i


# Timeouts ----------------------------------------------------------------------------------


def sleep_and_report(seconds, pid_file=None):
    """Writes its pid to ``pid_file`` (so that the test knows which worker runs it), then
    sleeps; returns its pid."""
    if pid_file is not None:
        tmp = pid_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, pid_file)
    time.sleep(seconds)
    return os.getpid()


# Arrays ------------------------------------------------------------------------------------


def double(a):
    return a * 2


def make_array(n, value):
    return np.full(n, value, dtype=np.float64)


def scribble(a):
    """Writes into the array it received; returns whether it could, whether the array was
    aligned for its type, and the new sum."""
    writeable, aligned = bool(a.flags.writeable), bool(a.flags.aligned)
    a[:] = -1.0
    return writeable, aligned, float(a.sum()), os.getpid()


# Nesting -----------------------------------------------------------------------------------


def nested_leaf():
    return os.getpid(), threading.get_ident()


def nested_middle():
    from joblet import Parallel, delayed

    leaves = Parallel(n_jobs=2)(delayed(nested_leaf)() for _ in range(3))
    return os.getpid(), threading.get_ident(), leaves


def nested_outer():
    from joblet import Parallel, delayed

    middles = Parallel(n_jobs=2)(delayed(nested_middle)() for _ in range(3))
    return os.getpid(), threading.get_ident(), middles


# Exact round trips -------------------------------------------------------------------------


class Colour(enum.IntEnum):
    RED = 1
    GREEN = 2


class Name(str):
    """A str subclass: must come back as itself, not as a plain str."""


def describe(*args, **kwargs):
    """What the worker received, types included, and the same values back as the result."""
    return [type(a).__name__ for a in args], sorted(kwargs), (args, kwargs)


def thread_vars(_):
    """Two of the worker's thread-count variables, and its pid."""
    return os.environ.get("OMP_NUM_THREADS"), os.environ.get("OPENBLAS_NUM_THREADS"), os.getpid()


def put(queue, item):
    """Puts `item` on a multiprocessing Manager queue (a proxy, which must connect back)."""
    queue.put(item)
    return item


def write_first(a, value):
    """Writes `value` into a[0] if it can; returns whether the array maps a file, whether it
    could write, and its last element."""
    writable = bool(a.flags.writeable)
    if writable:
        a[0] = value
        if hasattr(a, "flush"):
            a.flush()
    return getattr(a, "filename", None) is not None, writable, float(a.flat[-1])


def active_backend_here(_):
    """The backend a Parallel without arguments would use inside this task, and its nesting
    level."""
    from joblet._config import get_active_backend

    backend, _ = get_active_backend()
    return type(backend).__name__, backend.nesting_level


def nested_active_backend(_):
    """`active_backend_here` one level deeper: inside a task of a threads call made here."""
    from joblet import Parallel, delayed

    return Parallel(n_jobs=2, backend="threading")(delayed(active_backend_here)(i) for i in range(2))


def nested_call_warnings(backend):
    """Makes a 2-job call with `backend` here; returns the warnings it raised and whether its
    tasks ran in this very thread and process."""
    import warnings

    from joblet import Parallel, delayed

    here = (os.getpid(), threading.get_ident())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        where = Parallel(n_jobs=2, backend=backend)(delayed(_where)(i) for i in range(4))
    return [str(w.message) for w in caught], all(w == here for w in where)


def _where(_):
    return os.getpid(), threading.get_ident()


INITIALIZED = None


def remember(value):
    """A worker initializer: stores `value` in this module."""
    global INITIALIZED
    INITIALIZED = value


def initialized(_):
    """What the initializer stored in this worker, and the worker's pid."""
    return INITIALIZED, os.getpid()


def refuse_to_start():
    raise RuntimeError("this initializer fails")


KEPT_ARRAYS = []


def keep(a):
    """Keeps the array it received past its task (in this worker), and says where it ran."""
    KEPT_ARRAYS.append(a)
    return os.getpid()


def kept_sums(_):
    """The sums of the arrays this worker kept, and its pid."""
    return [float(a.sum()) for a in KEPT_ARRAYS], os.getpid()


def open_fds(_):
    """How many descriptors this worker has open."""
    return len(os.listdir("/proc/self/fd")), os.getpid()


def array_sum(a):
    return float(a.sum())


def sum_all(*arrays):
    """The sum of every array it received."""
    return float(sum(a.sum() for a in arrays))


def fork_and_read_later(a, ready_path, go_path):
    """Forks a child that waits for `go_path` to exist, then writes the sum of `a` as it
    sees it to `ready_path`; the task returns at once."""
    pid = os.fork()
    if pid == 0:
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(go_path) and time.monotonic() < deadline:
                time.sleep(0.01)
            with open(ready_path, "w") as f:
                f.write(repr(float(a.sum())))
        finally:
            os._exit(0)
    return pid


# Dask --------------------------------------------------------------------------------------

# How many times a CountedPayload was pickled in this process (the test's process: the
# count of times it was sent to the cluster).
PICKLED = {"count": 0}


class CountedPayload:
    """A big object that counts how often it is pickled in the process that made it, and
    tells Dask its size (Dask's ``sizeof`` asks ``__sizeof__``)."""

    def __init__(self, nbytes):
        self.data = bytes(nbytes)
        self.origin = os.getpid()

    def __sizeof__(self):
        return len(self.data)

    def __reduce__(self):
        if os.getpid() == self.origin:
            PICKLED["count"] += 1
        return (_rebuild_payload, (self.data, self.origin))


def _rebuild_payload(data, origin):
    payload = CountedPayload.__new__(CountedPayload)
    payload.data, payload.origin = data, origin
    return payload


def payload_length(payload, i, *, extra=None):
    return len(payload.data) + i + (len(extra.data) if extra is not None else 0)


def nested_dask_sum(n):
    """A task that runs its own Parallel call (on the Dask backend it inherits), of one-task
    batches, so that it needs worker threads while it holds one."""
    import joblet

    return sum(joblet.Parallel(n_jobs=-1, batch_size=1)(joblet.delayed(square)(j) for j in range(n)))


def kill_worker_once(marker):
    """Kills its own worker process the first time it runs (``marker`` does not exist yet),
    succeeds when run again."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return "survived"
    os.close(fd)
    os._exit(17)


def kill_worker(_):
    os._exit(17)


def nested_generator_and_list(n):
    """A task that consumes a nested generator and, for each value, makes a nested list
    call: two calls of one task waiting at once (its thread must secede only once)."""
    import joblet

    total = 0
    gen = joblet.Parallel(n_jobs=-1, batch_size=1, return_as="generator")(
        joblet.delayed(square)(j) for j in range(n)
    )
    for value in gen:
        total += value + sum(joblet.Parallel(n_jobs=-1)(joblet.delayed(add)(value, y=1) for _ in range(2)))
    return total


def double_in_place(a):
    a *= 2
    return float(a.sum())
