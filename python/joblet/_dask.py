"""The ``dask`` backend: ``Parallel`` on a Dask cluster (``dask.distributed``).

It is a custom backend (``engine = None``): ``joblet._custom`` drives it like any other,
so order, generators, the first failure, timeouts and progress behave as on the local
backends. This module only decides what travels to the cluster, and how::

    caller (Call, joblet._custom)                 Dask client              Dask workers
    ─────────────────────────────────            ─────────────            ─────────────────
    a batch of tasks (auto-batched) ─► submit:
      big arguments (>= max_nbytes) ──────────► scatter, once per call ─► held by a worker,
        are replaced by a hole                    (a Future)               fetched by peers
      client.submit(_run_batch,  ──────────────► one Dask task ──────────► _run_batch fills
                    pickled batch,                  per batch                the holes, runs
                    holes, *futures)                                         the batch
    callback ◄── future done (a Dask callback thread): the results or the task's exception
    first failure, timeout, a dropped generator, Ctrl-C ─► abort_everything: cancel the
                                                            batches still on the cluster

A ``Parallel`` call inside a task on a Dask worker runs on the cluster too, and its waiting
thread leaves the worker's pool while it waits (``secede``/``rejoin``), so nested calls
cannot take every worker thread and deadlock.

``dask.distributed`` is an optional dependency (``pip install 'joblet[dask]'``); without it,
asking for the backend raises an ``ImportError`` that says what to install.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
import uuid
import weakref
from typing import Any, Callable, Iterator, Optional

import cloudpickle

from ._backends import AutoBatchingMixin, ParallelBackendBase
from ._custom import Batch
from ._errors import TerminatedWorkerError

try:
    import distributed
    from dask.sizeof import sizeof
    from distributed.worker import thread_state
except ImportError as e:  # pragma: no cover - the package is tested with distributed
    raise ImportError(
        "joblet's 'dask' backend needs dask.distributed, which is not installed: "
        "pip install 'joblet[dask]' (or pip install distributed)"
    ) from e

# Parallel's default max_nbytes ("1M"), for a configure call that does not give it.
_DEFAULT_MAX_NBYTES = 1 << 20

# Arguments of these types are never scattered: they are small, and checking them would
# cost more than sending them (tiny tasks pass mostly these).
_NEVER_SHARED = frozenset((int, float, bool, complex, type(None), str, bytes, range))


class DaskDistributedBackend(AutoBatchingMixin, ParallelBackendBase):
    """Runs ``Parallel``'s batches as tasks of a Dask cluster.

    ``client`` is a ``distributed.Client``; without one, ``scheduler_host`` (an address such
    as ``"tcp://10.0.0.5:8786"``) connects a new one, else the client already active here is
    used (``distributed.get_client()``: the last one created, or the worker's own client
    inside a Dask task). ``scatter`` lists objects to send to every worker up front; tasks
    that take them as arguments then refer to the cluster's copy. Other arguments of
    ``max_nbytes`` (a ``Parallel`` setting, 1 MB by default) or more are sent to the cluster
    once per call, when a task first uses them, and leave it once the caller's object is
    gone and the batches using them are done; tasks get read-only views of such arrays.
    Dask futures among the arguments reach the tasks as their values.
    ``wait_for_workers_timeout`` is how long a call waits for a cluster with no worker yet.
    Other keyword arguments (``resources``, ``retries``, ``priority``, ...) go to
    ``client.submit`` for every batch.

    ``n_jobs`` does not limit the cluster (as in joblib): a call uses all its worker
    threads.

    >>> from distributed import Client, LocalCluster                  # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, processes=False))  # doctest: +SKIP
    >>> with joblet.parallel_config(backend="dask"):                  # doctest: +SKIP
    ...     joblet.Parallel(n_jobs=-1)(joblet.delayed(abs)(-i) for i in range(3))
    [0, 1, 2]
    """

    # Dask pays hundreds of microseconds per task (scheduler, transfers): batches aim at
    # 0.2–1 s of work, as joblib's dask backend does.
    MIN_IDEAL_BATCH_DURATION = 0.2
    MAX_IDEAL_BATCH_DURATION = 1.0
    supports_retrieve_callback = True
    default_n_jobs = -1
    # A cluster of one thread is still the cluster: its tasks may need its data, memory or
    # isolation (joblib would run them in the caller).
    one_worker_runs_here = False
    # Each call gets its own copy (joblet._custom), with its own batches and scattered
    # arguments: one parallel_config's instance serves every call made under it, two
    # generators alive at once included, and all the nested calls of one task.
    copied_per_call = True

    def __init__(
        self,
        scheduler_host: Optional[str] = None,
        scatter: Optional[Any] = None,
        client: Optional["distributed.Client"] = None,
        loop: Any = None,
        wait_for_workers_timeout: float = 10,
        nesting_level: Optional[int] = None,
        _connect_now: bool = True,
        **submit_kwargs: Any,
    ) -> None:
        super().__init__(nesting_level=nesting_level)
        if scatter is not None and not isinstance(scatter, (list, tuple)):
            raise TypeError(f"scatter must be a list or a tuple, not {type(scatter).__name__}")
        self._client = client
        self._scheduler_host = scheduler_host
        self._loop = loop
        self.wait_for_workers_timeout = wait_for_workers_timeout
        self.submit_kwargs = submit_kwargs
        # id -> (object, future): the objects are kept so that their ids stay theirs.
        self._broadcast: dict[int, tuple[Any, Any]] = {}
        self._scatter_list = list(scatter or ())
        # Per call: big arguments already on the cluster (id -> (weakref, future)), and the
        # batches still there (key -> future, to cancel them on abort).
        self._shared: dict[int, tuple[Callable[[], Any], Any]] = {}
        self._running: dict[str, Any] = {}  # (None: being submitted)
        self._threshold: Optional[int] = None
        # (The nested backend, in a worker, looks its client up when a nested call needs it.)
        if _connect_now:
            self._connect()

    # The client ------------------------------------------------------------------------------

    @property
    def client(self) -> "distributed.Client":
        if self._client is None:
            self._connect()
        assert self._client is not None
        return self._client

    def _connect(self) -> None:
        if self._client is None:
            if self._scheduler_host:
                self._client = distributed.Client(
                    self._scheduler_host, loop=self._loop, set_as_default=False
                )
            else:
                try:
                    self._client = distributed.get_client()
                except ValueError as e:
                    raise ValueError(
                        "the 'dask' backend needs a Dask client, and none is active: create "
                        "a Dask client first:\n\n    from distributed import Client\n    client = "
                        "Client()                        # a local cluster\n    client = "
                        "Client('scheduler-address:8786')  # an existing one\n\nor pass "
                        "scheduler_host='scheduler-address:8786' to parallel_config."
                    ) from e
        if self._scatter_list and not self._broadcast:
            futures = self._client.scatter(self._scatter_list, broadcast=True, hash=False)
            self._broadcast = {id(x): (x, f) for x, f in zip(self._scatter_list, futures)}

    def __copy__(self) -> "DaskDistributedBackend":
        # (copy.copy would otherwise go through __reduce__, below, and lose the client.)
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        return twin

    def __reduce__(self) -> tuple:
        # Inside a task on a worker (the nested backend travels with each batch): the
        # worker's own client, looked up when a nested call first needs it.
        return (_nested_backend, (self.nesting_level,))

    # The call --------------------------------------------------------------------------------

    def effective_n_jobs(self, n_jobs: int) -> int:
        """Every worker thread of the cluster (``n_jobs`` does not limit it, as in joblib).
        A cluster with no worker yet gets up to ``wait_for_workers_timeout`` seconds to
        have one: a probe task waits for it (and makes an adaptive cluster start one)."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        threads = sum(self.client.ncores().values())
        if threads == 0 and self.wait_for_workers_timeout:
            probe = self.client.submit(_probe, key=f"joblet-probe-{uuid.uuid4().hex}", pure=False)
            try:
                probe.result(timeout=self.wait_for_workers_timeout)
            except TimeoutError as e:
                raise TimeoutError(
                    f"DaskDistributedBackend has no worker after "
                    f"{self.wait_for_workers_timeout} seconds. Check that the cluster's "
                    "workers are started and reach the scheduler, or wait longer with "
                    "parallel_config(backend='dask', wait_for_workers_timeout="
                    f"{max(10, 2 * self.wait_for_workers_timeout)})"
                ) from e
            finally:
                probe.release()
            threads = sum(self.client.ncores().values())
        return threads

    def configure(
        self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any
    ) -> int:
        self.parallel = parallel
        # (Parallel hands it over in bytes, already parsed; None turns sharing off.)
        self._threshold = backend_kwargs.get("max_nbytes", _DEFAULT_MAX_NBYTES)
        return self.effective_n_jobs(n_jobs)

    def start_call(self) -> None:
        self._shared = {}
        self._running = {}

    def get_nested_backend(self) -> tuple[ParallelBackendBase, Optional[int]]:
        return _nested_backend((self.nesting_level or 0) + 1), -1

    def submit(self, func: Callable[[], list], callback: Optional[Callable[..., Any]] = None) -> Any:
        if isinstance(func, Batch):
            holes, futures = self._share_big_arguments(func)
            name, size = _function_name(func.items[0][0]), len(func.items)
        else:  # any other callable returning a list (not from joblet's driver): as it is
            holes, futures = [], []
            name, size = _function_name(func), 1
        # joblib's names: Dask's dashboard groups tasks by the key's text before its last "-".
        key = f"batch_of_{name}_{size}_calls-{uuid.uuid4().hex}"
        # Pickled here, once: Dask would pickle the batch twice on its way out (the graph,
        # then the message), and it pickles bytes for free.
        payload = cloudpickle.dumps(func, protocol=pickle.HIGHEST_PROTOCOL)
        running = self._running
        # Listed before it exists: a Ctrl-C inside client.submit may leave the batch on the
        # cluster with its future only in the interrupted frame, and abort_everything then
        # cancels it by its key.
        running[key] = None
        future = self.client.submit(
            _run_batch, payload, holes, *futures, key=key, pure=False, **self.submit_kwargs
        )
        running[key] = future

        def ended(done: Any) -> None:
            if callback is not None:
                callback(done)
            if done.status == "finished":
                # Its results are in the caller now: the cluster may forget them. A failed
                # batch stays listed, to be released when the call ends.
                running.pop(key, None)
            # The futures of its shared arguments were held until now: an argument whose
            # caller's object is gone leaves the cluster once no pending batch needs it
            # (released any earlier, the scheduler could drop it before it has even
            # registered this batch: "lost dependencies").
            futures.clear()

        future.add_done_callback(ended)
        return future

    def retrieve_result_callback(self, out: Any) -> Any:
        """A batch's list of results, or its task's exception (with the worker's traceback
        as ``__cause__`` when it ran in another process). A batch whose workers all died
        raises ``TerminatedWorkerError``."""
        try:
            return out.result().values
        except distributed.scheduler.KilledWorker as e:
            raise TerminatedWorkerError(
                f"the Dask workers running a batch ({out.key}) died while running it, as many "
                "times as the scheduler allows (distributed.scheduler.allowed-failures); the "
                "tasks may crash their worker (a segfault, os._exit, running out of memory)"
            ) from e

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancels the batches of this call still on the cluster (a task already running
        on a worker thread finishes, as Dask cannot stop a thread)."""
        futures = [
            future if future is not None else distributed.Future(key, self.client)
            for key, future in list(self._running.items())
        ]
        if futures:
            try:
                self.client.cancel(futures)
            except Exception:
                pass  # a client already closed has nothing left to cancel

    def stop_call(self) -> None:
        """Releases what the call left on the cluster: the batches not taken (failed ones,
        whose futures the caller's exception may keep alive for long, and those that
        abort_everything cancelled) and the scattered arguments still alive. Releasing is
        what makes the scheduler forget them; cancelling first stops queued work at once."""
        for future in list(self._running.values()):
            if future is not None:
                future.release()
        for _, future in self._shared.values():
            future.release()
        self._shared = {}
        self._running = {}

    @contextlib.contextmanager
    def retrieval_context(self) -> Iterator[None]:
        """Inside a task on a Dask worker, the waiting thread leaves the worker's pool
        (``secede``) and takes a slot again once the results are in (``rejoin``): nested
        calls then never hold every thread of the cluster while they wait."""
        if not hasattr(thread_state, "execution_state"):
            yield
            return
        # Once per thread: a task may have several calls waiting at once (a generator it
        # consumes while making other calls), and seceding twice is an error.
        waiting = getattr(_waiting, "calls", 0)
        _waiting.calls = waiting + 1
        if waiting == 0:
            distributed.secede()
        try:
            yield
        finally:
            _waiting.calls -= 1
            if _waiting.calls == 0:
                distributed.rejoin()

    # Big arguments ---------------------------------------------------------------------------

    def _share_big_arguments(self, batch: Batch) -> tuple[list, list]:
        """Replaces, in ``batch.items``, the arguments the cluster already holds (``scatter``)
        or should hold (``max_nbytes`` or more, sent now if this call has not yet sent them)
        by holes: ``(task, position or keyword, future index)`` triples, and the futures
        that fill them."""
        holes: list[tuple[int, Any, int]] = []
        futures: list[Any] = []
        index_of: dict[int, int] = {}
        broadcast, threshold = self._broadcast, self._threshold
        if not broadcast and threshold is None:
            return holes, futures
        items = batch.items
        for t, (f, args, kwargs) in enumerate(items):
            in_args = self._holes_in(t, enumerate(args), holes, futures, index_of)
            in_kwargs = self._holes_in(t, kwargs.items(), holes, futures, index_of)
            if in_args or in_kwargs:
                if in_args:
                    args = tuple(None if i in in_args else a for i, a in enumerate(args))
                if in_kwargs:
                    kwargs = {k: None if k in in_kwargs else v for k, v in kwargs.items()}
                items[t] = (f, args, kwargs)
        return holes, futures

    def _holes_in(
        self, t: int, arguments: Any, holes: list, futures: list, index_of: dict[int, int]
    ) -> Optional[set]:
        """The positions (or keywords) among task ``t``'s ``arguments`` that become holes,
        each recorded in ``holes`` with the index of its future in ``futures``; None when
        there is none (most tasks: no set made)."""
        found = None
        broadcast, threshold = self._broadcast, self._threshold
        for where, arg in arguments:
            future = self._future_for(arg, broadcast, threshold)
            if future is not None:
                if found is None:
                    found = set()
                found.add(where)
                holes.append((t, where, _index(future, futures, index_of)))
        return found

    def _future_for(self, arg: Any, broadcast: dict, threshold: Optional[int]) -> Any:
        """What fills the hole of ``arg`` on the worker (a future, or a container of
        futures, which Dask resolves), or None when ``arg`` travels with the batch."""
        if broadcast:
            known = broadcast.get(id(arg))
            if known is not None and known[0] is arg:
                return known[1]
        kind = type(arg)
        if kind in _NEVER_SHARED:
            return None
        if kind is distributed.Future:
            return arg  # the user's own future: the task gets its value, as in joblib
        if kind in _CONTAINERS and _holds_a_future(arg):
            return arg  # passed apart, so that Dask gives the task its futures' values
        if threshold is None:
            return None
        shared = self._shared
        known = shared.get(id(arg))
        if known is not None and known[0]() is arg:
            return known[1]
        # Only objects that can be weakly referred to are shared: the entry must end with
        # the object (its id may then be reused), and the cluster's copy with it.
        key = id(arg)

        def forget(_: Any) -> None:
            # Dropped, not released: the batches that use it hold its future until they
            # end, and the last reference gone releases it.
            entry = shared.get(key)
            if entry is not None and entry[0]() is None:
                shared.pop(key, None)

        try:
            ref = weakref.ref(arg, forget)
        except TypeError:
            return None
        if sizeof(arg) < threshold:
            return None
        future = self.client.scatter(arg, hash=False)
        shared[key] = (ref, future)
        return future


# Arguments of these types are looked into (one level, up to _LOOK_INTO items) for futures.
_CONTAINERS = frozenset((list, tuple, set, frozenset, dict))
_LOOK_INTO = 1000


def _holds_a_future(container: Any) -> bool:
    if len(container) > _LOOK_INTO:
        return False
    items = container.values() if type(container) is dict else container
    return any(type(item) is distributed.Future for item in items)


# Per thread: how many calls made in this (Dask worker) thread are waiting for results.
_waiting = threading.local()


def _nested_backend(nesting_level: Optional[int]) -> DaskDistributedBackend:
    """The backend of calls made inside a batch: on a worker, its client is the worker's
    own, found when a nested call first asks for it."""
    return DaskDistributedBackend(nesting_level=nesting_level, _connect_now=False)


class _Values:
    """A batch's results, as one opaque object: Dask would serialize a plain list item by
    item (0.15 s for 4096 integers, against 6 ms for this)."""

    __slots__ = ("values",)

    def __init__(self, values: list) -> None:
        self.values = values

    def __getstate__(self) -> list:
        return self.values

    def __setstate__(self, values: list) -> None:
        self.values = values

    def __sizeof__(self) -> int:
        # What Dask counts for the worker's memory and for transfers.
        return int(sizeof(self.values))


def _run_batch(payload: bytes, holes: list, *values: Any) -> _Values:
    """A batch, on a Dask worker: the holes filled with the values of their futures (the
    cluster's copies of big arguments), then its tasks run."""
    batch = pickle.loads(payload)
    if holes:
        # Every task of every batch on this worker gets the same copy of a shared array: a
        # read-only view of it, so that one task's writes cannot reach another's input (as
        # joblib's read-only memmaps refuse them).
        values = tuple(_read_only(v) for v in values)
        items = batch.items
        for t, where, v in holes:
            f, args, kwargs = items[t]
            if isinstance(where, int):
                args = args[:where] + (values[v],) + args[where + 1 :]
            else:
                kwargs = dict(kwargs)
                kwargs[where] = values[v]
            items[t] = (f, args, kwargs)
    return _Values(batch())


def _read_only(value: Any) -> Any:
    if type(value).__module__ == "numpy" and type(value).__name__ == "ndarray":
        view = value.view()
        view.flags.writeable = False
        return view
    return value


def _probe() -> None:
    """Runs on the first worker a cluster gets (effective_n_jobs waits for it)."""


def _index(future: Any, futures: list, index_of: dict[int, int]) -> int:
    at = index_of.get(id(future))
    if at is None:
        at = index_of[id(future)] = len(futures)
        futures.append(future)
    return at


def _function_name(f: Any) -> str:
    """For the task's key (Dask's dashboard groups tasks by it): the first task's function."""
    name = getattr(f, "__name__", type(f).__name__)
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "task"
