"""Custom backends: ``Parallel``'s driver for a backend that runs tasks on its own executor.

A backend whose ``engine`` is None (a user's ``ParallelBackendBase`` subclass, or a backend
written against joblib itself, such as a Dask or ray backend) runs batches of tasks; this
module plays the part of joblib 1.6's ``Parallel`` around it. Everything here happens in the
caller's thread except the callbacks, which only put events on a queue::

    caller thread (Call)                                     backend's threads / workers
    ────────────────────────────────────────────────        ───────────────────────────────
    configure (each call, or once per `with` block)
    start_call
    cut a batch (compute_batch_size), submit(batch, cb) ───► batch(): runs the tasks under
      while the window (pre_dispatch) has room                the nested backend, returns
                                                              the list of their results
    wait on `events` ◄──── (record, outcome, time) ───────── cb(out): retrieve_result_callback
      outcome → batch_completed, progress, next batches       (backends without
      first failure or timeout → abort_everything              supports_retrieve_callback: a
    hand results over: input order or completion order        retriever thread calls
    stop_call, then terminate (unless a `with` block)          retrieve_result, in order)

The rules are the engine's (crates/joblet/src/scheduler/README.md):

- ``pre_dispatch`` counts batches. A batch holds a window slot from its submission until its
  results are consumed: for a list, when its outcome arrives; for the generators, when its
  last value has been yielded. So a lazily consumed call holds at most ``pre_dispatch``
  batches of results, and pulls its input no further ahead.
- The input iterator is only ever read in the caller's thread (joblib also reads it in
  callback threads).
- The first failure in time (a task's exception, a timeout, the input iterator's exception, a
  backend's error) ends the call: no more batches, ``abort_everything``, ``stop_call``,
  ``terminate``, and the exception is raised in the caller.
- ``timeout`` applies to a batch (as in joblib). A backend runs batches in the order it
  receives them, ``n_jobs`` at a time, so a batch's clock starts when it is among the
  ``n_jobs`` oldest unfinished ones, not while it waits in the backend's queue.
"""

from __future__ import annotations

import ast
import concurrent.futures
import copy
import itertools
import multiprocessing
import operator
import os
import queue
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Union

from ._backends import FallbackToBackend, runs_on_engine
from ._errors import RemoteTraceback

if TYPE_CHECKING:
    from ._parallel import Parallel

# Where a batch run in another process leaves the formatted traceback of a task's exception
# (in the exception's __dict__, which pickling keeps); the caller turns it into __cause__.
_REMOTE_TRACEBACK = "_joblet_remote_traceback"


class Batch:
    """What a custom backend's ``submit`` receives (joblib's ``BatchedCalls``): calling it
    runs its tasks, under the nested backend, and returns the list of their results.

    ``items`` is the list of ``(function, args, kwargs)`` triples (Dask's backend reads it);
    ``len(batch)`` is their number. A batch pickles by value (cloudpickle for lambdas, as
    any backend that ships callables to other processes does). When it runs in another
    process, a task's exception carries its formatted traceback back to the caller, where
    it becomes the exception's ``__cause__`` (``joblet.RemoteTraceback``).
    """

    def __init__(self, items: list, nested_backend: Any, nested_n_jobs: Optional[int]) -> None:
        self.items = items
        self._backend = nested_backend
        self._n_jobs = nested_n_jobs
        self._caller_pid = os.getpid()

    def __call__(self) -> list:
        from ._config import parallel_config

        try:
            if self._backend is None:
                return [f(*args, **kwargs) for f, args, kwargs in self.items]
            with parallel_config(backend=self._backend, n_jobs=self._n_jobs):
                return [f(*args, **kwargs) for f, args, kwargs in self.items]
        except BaseException as e:
            if os.getpid() != self._caller_pid:
                try:
                    e.__dict__[_REMOTE_TRACEBACK] = "".join(
                        traceback.format_exception(type(e), e, e.__traceback__)
                    )
                except Exception:
                    pass  # the traceback is a courtesy; the exception itself must travel
            raise

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        names = {getattr(f, "__name__", type(f).__name__) for f, _, _ in self.items}
        what = names.pop() if len(names) == 1 else "mixed functions"
        return f"<joblet batch of {len(self.items)} calls to {what}>"


def configure(parallel: "Parallel", stacklevel: int = 3) -> int:
    """joblib's backend set-up: ``configure`` with the ``Parallel``'s settings, following
    ``FallbackToBackend`` (which replaces ``parallel._backend``); the number of workers.
    Warns, as joblib, when a timeout is set that the backend does not support
    (``stacklevel`` points the warning at the user's line)."""
    while True:
        backend = parallel._backend
        if runs_on_engine(backend):
            return int(backend.effective_n_jobs(parallel.n_jobs))
        try:
            n_jobs = backend.configure(
                n_jobs=parallel.n_jobs, parallel=parallel, **parallel._backend_kwargs
            )
        except Exception as e:
            # joblet's FallbackToBackend, or joblib's for backends written against joblib.
            if isinstance(e, FallbackToBackend) or (
                type(e).__name__ == "FallbackToBackend" and hasattr(e, "backend")
            ):
                parallel._backend = e.backend  # type: ignore[attr-defined]
                continue
            raise
        break
    if parallel.timeout is not None and n_jobs != 1 and not backend.supports_timeout:
        # (One worker runs on the engine in the caller, which warns in its own words.)
        warnings.warn(
            f"The backend class {type(backend).__name__!r} does not support timeout. You "
            f"have set 'timeout={parallel.timeout}' in Parallel but the 'timeout' "
            "parameter will not be used.",
            UserWarning,
            stacklevel=stacklevel,
        )
    return n_jobs


def run(parallel: "Parallel", iterable: Iterable[Any]) -> Union[None, list, "Call"]:
    """A call of ``parallel`` on its custom backend: the list of results, or a running
    ``Call`` for the generator modes; None when the tasks should rather run in the caller
    on the engine (one worker, or ``configure`` fell back to a built-in backend)."""
    if parallel._managed_backend:
        n_jobs = parallel._backend.effective_n_jobs(parallel.n_jobs)
    else:
        n_jobs = configure(parallel, stacklevel=4)
    backend = parallel._backend
    if runs_on_engine(backend) or (n_jobs == 1 and getattr(backend, "one_worker_runs_here", True)):
        return None
    if not parallel._managed_backend and getattr(backend, "copied_per_call", False):
        # Calls sharing one configured instance (two generators of one parallel_config,
        # nested calls in one task) each get their own copy, and so their own call state.
        backend = copy.copy(backend)
    if not n_jobs or n_jobs < 1:
        raise RuntimeError(f"{type(backend).__name__} has no active worker.")
    try:
        call = Call(parallel, backend, iterable, int(n_jobs))
    except BaseException:
        if not parallel._managed_backend:
            backend.terminate()
        raise
    call.start()
    if not parallel.return_generator:
        return call.collect()
    # Weak: a generator dropped unstarted must free its call (Call.__del__ stops it).
    parallel._custom_call = weakref.ref(call)
    return call


def release(parallel: "Parallel") -> None:
    """The end of a ``with Parallel(...)`` block: stops a generator still running (without
    keeping the backend ready), then ``terminate``."""
    call = parallel._custom_call() if parallel._custom_call is not None else None
    if call is not None and not call.closed:
        call.close()  # the block is over: its shutdown terminates the backend
    elif not runs_on_engine(parallel._backend):
        parallel._backend.terminate()


class _Record:
    """A submitted batch, as the caller tracks it."""

    __slots__ = ("number", "first", "size", "submitted", "clock", "ended", "out", "values", "slot")

    def __init__(self, number: int, first: int, size: int) -> None:
        self.number = number
        self.first = first  # input index of its first task
        self.size = size
        self.submitted = 0.0  # time.monotonic() of submit
        self.clock: Optional[float] = None  # since when it counts as running (timeouts)
        self.ended: Optional[float] = None  # when the backend said it ended
        self.out: Any = None  # what submit returned
        self.values: Optional[list] = None  # its results, once retrieved
        self.slot = True  # holds a window slot

    def describe(self) -> str:
        if self.size == 1:
            return f"task {self.first} was"
        return f"tasks {self.first} to {self.first + self.size - 1} (one batch) were"


_END = object()  # Call._next_value: no more results


class _TimedOut(Exception):
    """The backend's ``retrieve_result`` gave up after the call's timeout."""


class Call:
    """One call on a custom backend: dispatch, waiting, order, failure and shutdown. It is
    an iterator over the results (the generator modes) with ``close()``; ``collect()``
    returns them all as a list."""

    def __init__(
        self, parallel: "Parallel", backend: Any, iterable: Iterable[Any], n_jobs: int
    ) -> None:
        # Shared with the callbacks, which must not hold the Call itself: a generator
        # dropped unconsumed then frees it, and __del__ stops the backend's work.
        self._over = threading.Event()
        self._started = False
        self._parallel = parallel
        self._backend = backend
        self._n_jobs = n_jobs
        self._input = iter(iterable)
        self._window = _window(parallel.pre_dispatch, n_jobs)
        self._fixed_size = None if parallel.batch_size == "auto" else int(parallel.batch_size)
        self._ordered = parallel.return_ordered
        self._lazy = parallel.return_generator
        self._timeout: Optional[float] = parallel.timeout if backend.supports_timeout else None
        self._timeout_asked: Optional[float] = parallel.timeout
        self._by_callback = bool(getattr(backend, "supports_retrieve_callback", False))
        submit = getattr(backend, "submit", None)
        self._submit: Callable[..., Any] = submit if callable(submit) else backend.apply_async
        self._progress = _Progress(parallel)

        self._events: "queue.SimpleQueue[tuple[_Record, Any, float]]" = queue.SimpleQueue()
        self._to_retrieve: Optional["queue.SimpleQueue[Optional[_Record]]"] = None
        self._records: dict[int, _Record] = {}  # submitted and not yet handed over
        self._unfinished: dict[int, _Record] = {}  # submitted, not ended (submission order)
        self._completed: deque[_Record] = deque()  # generator_unordered: in completion order
        self._submitted = 0  # batches
        self._settled = 0  # batches with results (or an error)
        self._next_out = 0  # the next batch to hand over, in input order
        self._slots = 0
        self._exhausted = False
        self._values: deque[Any] = deque()  # results being yielded...
        self._current: Optional[_Record] = None  # ...of this batch
        self._error: Optional[BaseException] = None
        self._context: Any = None  # the backend's retrieval_context, entered
        self._aborted = False

    @property
    def closed(self) -> bool:
        """Whether the call has ended (its backend stopped or released)."""
        return self._over.is_set()

    def __del__(self) -> None:
        if self._started and not self.closed:
            try:
                self.close()
            except Exception:
                pass

    # Start, and the two ways out ---------------------------------------------------------

    def start(self) -> None:
        """``start_call``, the first batches, then the backend's retrieval context."""
        self._started = True
        try:
            self._parallel._print(
                f"Using backend {type(self._backend).__name__} with {self._n_jobs} "
                "concurrent workers."
            )
            self._backend.start_call()
            self._fill()
            context = self._backend.retrieval_context()
            context.__enter__()
            self._context = context
        except BaseException:
            self._shutdown(abort=True)
            raise

    def collect(self) -> list:
        """Every result, in input order (``return_as="list"``)."""
        try:
            while not (self._exhausted and self._settled == self._submitted):
                self._step()
        except BaseException:
            self._shutdown(abort=True)
            raise
        self._shutdown(abort=False)
        return [v for n in range(self._submitted) for v in self._records[n].values or ()]

    def __iter__(self) -> "Call":
        return self

    def __next__(self) -> Any:
        try:
            value = self._next_value()
        except BaseException as e:
            self._records.clear()
            self._values.clear()
            self._shutdown(abort=True)
            if isinstance(e, StopIteration):
                # A task's StopIteration would read as the end of the results (PEP 479's
                # case), as in the engine's generators.
                raise RuntimeError("a task raised StopIteration") from e
            raise
        if value is _END:
            raise StopIteration
        return value

    def _next_value(self) -> Any:
        while True:
            if self._values:
                value = self._values.popleft()
                if not self._values:
                    self._hand_over_done()
                return value
            if self.closed and not self._records:
                return _END
            record = self._next_completed()
            if record is not None:
                del self._records[record.number]
                self._values.extend(record.values or ())
                self._current = record
                if not self._values:
                    self._hand_over_done()
                continue
            self._step()
            if self._exhausted and self._settled == self._submitted:
                # Every result is here: the backend can go before they are all consumed.
                self._shutdown(abort=False)

    def close(self) -> None:
        """Stops the call (an abandoned generator): ``abort_everything`` if batches still
        run, then ``stop_call`` and ``terminate``; results not yet taken are dropped."""
        self._records.clear()
        self._values.clear()
        self._shutdown(abort=self._settled < self._submitted)

    def _shutdown(self, abort: bool) -> None:
        """Ends the call once, in joblib's order: the retrieval context, ``abort_everything``
        (after a failure), ``stop_call``, ``terminate`` (unless a ``with`` block manages the
        backend). Each step runs even if an earlier one raised."""
        if self.closed:
            return
        self._over.set()
        # What submit returned is of no more use, and may hold results on the backend's
        # side (a Dask future keeps its data on the cluster while it lives): let it go, even
        # while the exception that ended the call (and so this Call) is kept.
        for record in self._records.values():
            record.out = None
        parallel, backend = self._parallel, self._backend
        if parallel._custom_call is not None and parallel._custom_call() in (self, None):
            parallel._custom_call = None
        if self._to_retrieve is not None:
            self._to_retrieve.put(None)
        try:
            if self._context is not None:
                context, self._context = self._context, None
                context.__exit__(None, None, None)
        finally:
            try:
                if abort and not self._aborted:
                    self._aborted = True
                    backend.abort_everything(ensure_ready=parallel._managed_backend)
            finally:
                try:
                    self._progress.finished(self._error)
                    backend.stop_call()
                finally:
                    if not parallel._managed_backend:
                        backend.terminate()

    # Dispatch ------------------------------------------------------------------------------

    def _step(self) -> None:
        """Fill the window, then wait for the backend's next event (or the next deadline);
        raise the call's error once there is one."""
        self._fill()
        if self._error is None and not (self._exhausted and self._settled == self._submitted):
            self._wait()
        if self._error is not None:
            raise _with_remote_traceback(self._error)

    def _fill(self) -> None:
        while (
            self._error is None
            and not self._exhausted
            and not self.closed
            and (self._window is None or self._slots < self._window)
        ):
            self._dispatch_one()

    def _dispatch_one(self) -> None:
        size = self._fixed_size
        if size is None:
            size = max(int(self._backend.compute_batch_size()), 1)
            left = operator.length_hint(self._input, -1)
            if left > 0:
                # A known end: share what is left, so that the last batches spread over
                # every worker instead of one worker finishing a long batch alone.
                size = min(size, max(left // (2 * self._n_jobs), 1))
        try:
            items = list(itertools.islice(self._input, size))
        except BaseException as e:
            self._exhausted = True
            self._fail(e)
            return
        if len(items) < size:
            self._exhausted = True
            self._progress.total = self._progress.dispatched + len(items)
        if not items:
            return
        record = _Record(self._submitted, self._progress.dispatched, len(items))
        self._submitted += 1
        self._records[record.number] = record
        self._unfinished[record.number] = record
        self._slots += 1
        record.submitted = time.monotonic()
        self._progress.dispatched += len(items)
        # A nested backend per batch, as joblib: a custom one may keep per-call state.
        nested = self._backend.get_nested_backend()
        batch = Batch(items, *(nested if isinstance(nested, tuple) else (nested, None)))
        try:
            record.out = self._submit(batch, callback=self._callback(record))
        except BaseException as e:
            self._fail(e)
            return
        # Timeout clocks start once the backend has the batch: what submit itself takes
        # (Dask scattering a big argument) is not the task's running time.
        self._start_clocks(time.monotonic())
        if not self._by_callback:
            self._retrieve_later(record)
        self._progress.report()

    def _callback(self, record: _Record) -> Callable[..., None]:
        """The callback ``submit`` receives for this batch. It runs in the backend's thread
        (or inside ``submit``): it only retrieves the outcome and queues it."""
        events, over = self._events, self._over
        if not self._by_callback:

            def ended(*args: Any, **kwargs: Any) -> None:
                events.put((record, None, time.monotonic()))

            return ended
        retrieve = self._backend.retrieve_result_callback

        def done(*args: Any, **kwargs: Any) -> None:
            if over.is_set():
                return  # the call is over; nobody will take this result
            try:
                outcome: tuple[bool, Any] = (True, retrieve(*args, **kwargs))
            except BaseException as e:
                outcome = (False, e)
            events.put((record, outcome, time.monotonic()))

        return done

    def _retrieve_later(self, record: _Record) -> None:
        """Backends without ``supports_retrieve_callback``: a thread reads the batches'
        results with ``retrieve_result``, in order of submission, so that the caller keeps
        dispatching meanwhile and a backend that forgets the callback on failure cannot
        leave the call waiting."""
        if self._to_retrieve is None:
            self._to_retrieve = queue.SimpleQueue()
            threading.Thread(
                target=_retrieve_in_order,
                args=(
                    self._backend,
                    self._to_retrieve,
                    self._events,
                    self._parallel.timeout,
                    self._over,
                ),
                name="joblet-custom-retrieve",
                daemon=True,
            ).start()
        self._to_retrieve.put(record)

    # Waiting and outcomes ------------------------------------------------------------------

    def _wait(self) -> None:
        timeout = None
        deadline = self._deadline()
        if deadline is not None:
            timeout = max(deadline - time.monotonic(), 0.0)
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            pass
        else:
            self._on_event(*event)
            while self._error is None:
                try:
                    event = self._events.get_nowait()
                except queue.Empty:
                    break
                self._on_event(*event)
        if self._error is None:
            self._check_timeout()

    def _on_event(self, record: _Record, outcome: Optional[tuple[bool, Any]], when: float) -> None:
        if self.closed or record.values is not None:
            return
        if outcome is not None and not outcome[0]:
            self._ended(record, when, ok=False)
            error = outcome[1]
            if isinstance(error, _TimedOut):
                error = self._timeout_error(record)
            self._fail(error)
            return
        self._ended(record, when, ok=True)
        if outcome is None:
            return  # the backend's signal; the retriever thread brings the values
        values = outcome[1]
        record.values = values if isinstance(values, list) else list(values)
        record.out = None
        self._settled += 1
        self._progress.completed(record.size)
        if not self._lazy:
            self._release(record)
        if not self._ordered:
            self._completed.append(record)

    def _ended(self, record: _Record, when: float, ok: bool) -> None:
        """The backend is done with ``record``: the next batch's clock starts, auto batching
        learns the duration, and a list's window slot is free (its result needs none)."""
        if record.ended is not None:
            return
        record.ended = when
        self._unfinished.pop(record.number, None)
        self._start_clocks(when)
        if ok:
            self._backend.batch_completed(record.size, when - record.submitted)
            if not self._lazy:
                self._release(record)

    def _release(self, record: _Record) -> None:
        if record.slot:
            record.slot = False
            self._slots -= 1

    def _hand_over_done(self) -> None:
        """The current batch's last value has been taken: its window slot is free, and the
        next batches go out before the consumer comes back."""
        if self._current is not None:
            self._release(self._current)
            self._current = None
        if self._error is None:
            self._fill()

    def _next_completed(self) -> Optional[_Record]:
        if not self._ordered:
            return self._completed.popleft() if self._completed else None
        record = self._records.get(self._next_out)
        if record is None or record.values is None:
            return None
        self._next_out += 1
        return record

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error

    # Timeouts ------------------------------------------------------------------------------

    def _start_clocks(self, now: float) -> None:
        """Batches among the ``n_jobs`` oldest unfinished ones count as running from now."""
        if self._timeout is None:
            return
        for record in itertools.islice(self._unfinished.values(), self._n_jobs):
            if record.clock is None:
                record.clock = now

    def _deadline(self) -> Optional[float]:
        if self._timeout is None:
            return None
        clocks = [
            r.clock
            for r in itertools.islice(self._unfinished.values(), self._n_jobs)
            if r.clock is not None
        ]
        return min(clocks) + self._timeout if clocks else None

    def _check_timeout(self) -> None:
        if self._timeout is None:
            return
        now = time.monotonic()
        for record in itertools.islice(self._unfinished.values(), self._n_jobs):
            if record.clock is not None and now - record.clock >= self._timeout:
                self._fail(self._timeout_error(record))
                return

    def _timeout_error(self, record: _Record) -> BaseException:
        return multiprocessing.TimeoutError(
            f"{record.describe()} still running after the timeout of {self._timeout_asked} s; "
            f"the call stopped and asked {type(self._backend).__name__} to abort its work"
        )


# How often the retriever thread looks up from a wait to see whether the call is over.
_RETRIEVE_POLL = 0.1


def _retrieve_in_order(
    backend: Any,
    records: "queue.SimpleQueue[Optional[_Record]]",
    events: "queue.SimpleQueue[tuple[_Record, Any, float]]",
    timeout: Optional[float],
    over: threading.Event,
) -> None:
    """The retriever thread of a backend without ``supports_retrieve_callback``. It stops
    once the call is over: after an abort, a terminated pool may never answer
    (``AsyncResult.get`` on a terminated ``multiprocessing`` pool blocks forever), so it
    waits for what it knows how to wait for (``AsyncResult``, futures) in short steps."""
    while True:
        record = records.get()
        if record is None or over.is_set():
            return
        started = time.monotonic()
        timed_out = False
        while True:
            if over.is_set():
                return
            ready = _wait_ready(record.out, _RETRIEVE_POLL)
            if ready is None or ready:
                break
            if timeout is not None and time.monotonic() - started >= timeout:
                timed_out = True
                break
        if timed_out:
            outcome: tuple[bool, Any] = (False, _TimedOut())
        else:
            left = None if timeout is None else max(timeout - (time.monotonic() - started), 0.0)
            try:
                outcome = (True, backend.retrieve_result(record.out, timeout=left))
            except (TimeoutError, multiprocessing.TimeoutError) as e:
                if timeout is not None and time.monotonic() - started >= timeout:
                    outcome = (False, _TimedOut())
                else:
                    outcome = (False, e)  # the task's own TimeoutError
            except BaseException as e:
                outcome = (False, e)
        events.put((record, outcome, time.monotonic()))


def _wait_ready(out: Any, seconds: float) -> Optional[bool]:
    """Waits up to ``seconds`` for ``out`` to be ready, when it is a kind of result joblet
    knows how to wait for: whether it is; None for any other kind."""
    if isinstance(out, concurrent.futures.Future):
        concurrent.futures.wait([out], timeout=seconds)
        return out.done()
    wait, ready = getattr(out, "wait", None), getattr(out, "ready", None)
    if callable(wait) and callable(ready):  # multiprocessing's AsyncResult
        wait(seconds)
        return bool(ready())
    return None


def _with_remote_traceback(error: BaseException) -> BaseException:
    """A task's exception from another process, with its traceback there as ``__cause__``
    (unless the backend already attached one, as ``concurrent.futures`` does)."""
    state = getattr(error, "__dict__", None)
    text = state.pop(_REMOTE_TRACEBACK, None) if state else None
    if text is not None and error.__cause__ is None:
        error.__cause__ = RemoteTraceback(f'\n"""\n{text}"""')
    return error


class _Progress:
    """The ``progress`` callback and the ``verbose`` lines of a call, in the engine's
    formats (``crates/joblet/src/progress.rs``)."""

    def __init__(self, parallel: "Parallel") -> None:
        self._callback = parallel.progress
        self._parallel = parallel
        self._verbose = int(parallel.verbose) if parallel.verbose else 0
        self._started = time.monotonic()
        self._batches = 0
        self._done = 0
        self.dispatched = 0
        self.total: Optional[int] = None

    def report(self) -> None:
        if self._callback is not None:
            try:
                self._callback(self._done, self.total)
            except Exception:
                sys.stderr.write("Exception ignored in the progress callback of a call:\n")
                traceback.print_exc()

    def completed(self, size: int) -> None:
        self._done += size
        self._batches += 1
        self.report()
        if self._verbose and self._wants_line():
            elapsed = time.monotonic() - self._started
            if self.total is None:
                self._parallel._print(
                    f"Done {self._done:3} tasks      | elapsed: {_short(elapsed)}"
                )
            elif self._done < self.total:
                left = elapsed / self._done * (self.total - self._done)
                self._parallel._print(
                    f"Done {self._done:3} out of {self.total:3} | elapsed: {_short(elapsed)} "
                    f"remaining: {_short(left)}"
                )

    def finished(self, error: Optional[BaseException]) -> None:
        self.report()
        if self._verbose:
            total = self.total if self.total is not None and error is None else self._done
            elapsed = time.monotonic() - self._started
            self._parallel._print(
                f"Done {self._done:3} out of {total:3} | elapsed: {_short(elapsed)} finished"
            )

    def _wants_line(self) -> bool:
        # joblib's cadence: every batch above level 10, else at ever sparser square roots.
        if self._verbose > 10 or self._batches <= 1:
            return True
        step = 0.5 * (11 - self._verbose) ** 2
        return int((self._batches / step) ** 0.5) != int(((self._batches - 1) / step) ** 0.5)


def _short(seconds: float) -> str:
    return f"{seconds / 60:4.1f}min" if seconds > 60 else f" {seconds:5.1f}s"


# pre_dispatch ---------------------------------------------------------------------------


def _window(pre_dispatch: Any, n_jobs: int) -> Optional[int]:
    """``pre_dispatch`` as a number of batches (None: ``"all"``), as the engine reads it:
    a count, or an arithmetic expression in ``n_jobs`` such as ``"2*n_jobs"``."""
    if isinstance(pre_dispatch, str):
        text = pre_dispatch.strip()
        if text == "all":
            return None
        try:
            value = _evaluate(ast.parse(text, mode="eval").body, n_jobs)
        except (SyntaxError, ValueError, ZeroDivisionError) as e:
            raise ValueError(f"invalid pre_dispatch: cannot evaluate {text!r}: {e}") from None
    else:
        value = int(pre_dispatch)
    if value < 1:
        raise ValueError(
            f"invalid pre_dispatch: {pre_dispatch!r} gives {value} batches; at least 1 is needed"
        )
    return value


_OPERATORS: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.floordiv,  # batches are whole, as in the engine
    ast.FloorDiv: operator.floordiv,
}


def _evaluate(node: ast.AST, n_jobs: int) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name) and node.id == "n_jobs":
        return n_jobs
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand, n_jobs)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left, n_jobs), _evaluate(node.right, n_jobs)
        return _OPERATORS[type(node.op)](left, right)
    raise ValueError("expected numbers, n_jobs, + - * / // and parentheses")
