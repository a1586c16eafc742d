"""How a task crosses to a worker process and its outcome back.

Functions are pickled with cloudpickle (lambdas, closures and ``__main__`` functions travel by
value), once per distinct function per call in the caller, and unpickled once per distinct
pickle in each worker. Arguments and results use pickle protocol 5: buffers of arrays and
anything else with the buffer protocol travel out of band, as raw blocks next to the pickle
stream, never through it.
"""

from __future__ import annotations

import pickle
import sys
import traceback
from typing import Any, Callable

import cloudpickle

from ._errors import RemoteTraceback, WorkerTaskError

# Below this size, a buffer stays inside the pickle stream (one block is cheaper than two).
_OUT_OF_BAND_MIN = 64 * 1024


def _out_of_band() -> tuple[list[memoryview], Callable[[pickle.PickleBuffer], bool]]:
    """A list for out-of-band buffers and the ``buffer_callback`` that fills it."""
    buffers: list[memoryview] = []

    def keep(buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()
        if raw.nbytes < _OUT_OF_BAND_MIN:
            return True  # in band
        buffers.append(raw)
        return False

    return buffers, keep


def _dumps(obj: Any) -> tuple[bytes, list[memoryview]]:
    # The C pickler first: 6x cheaper per call than cloudpickle for plain data. It pickles
    # functions and classes by reference, which a worker can resolve unless they live in
    # `__main__` (workers never import the caller's): a stream that names `__main__` is
    # redone with cloudpickle, which sends such objects by value. What the C pickler cannot
    # pickle at all (lambdas, closures) goes to cloudpickle too. (joblet._core does the same
    # for arguments, in Rust, and calls `encode_args` for the cloudpickle part.)
    buffers, keep = _out_of_band()
    try:
        data = pickle.dumps(obj, protocol=5, buffer_callback=keep)
        if b"__main__" not in data:
            return data, buffers
    except Exception:
        pass
    return _cloud_dumps(obj)


def _cloud_dumps(obj: Any) -> tuple[bytes, list[memoryview]]:
    buffers, keep = _out_of_band()
    return cloudpickle.dumps(obj, protocol=5, buffer_callback=keep), buffers


def encode_function(index: int, function: Callable[..., Any]) -> bytes:
    """The function pickled for workers (by value when it lives in ``__main__`` or is a
    lambda or closure). The caller pickles each distinct function once per call."""
    try:
        return cloudpickle.dumps(function, protocol=5)
    except Exception as e:
        raise pickle.PicklingError(
            f"task {index}: could not pickle the function to send it to a worker process: "
            f"{type(e).__name__}: {e}"
        ) from e


def encode_args(index: int, args: tuple, kwargs: dict | None) -> tuple[bytes, list[memoryview]]:
    """The arguments pickled by cloudpickle for a worker, with their out-of-band buffers:
    joblet._core has tried the C pickler already and comes here when it failed or named
    ``__main__``. A failure is a ``PicklingError`` that names the task."""
    try:
        return _cloud_dumps((args, kwargs or {}))
    except Exception as e:
        raise pickle.PicklingError(
            f"task {index}: could not pickle the task to send it to a worker process: "
            f"{type(e).__name__}: {e}"
        ) from e


# Worker side ----------------------------------------------------------------------------

_functions: dict[bytes, Callable[..., Any]] = {}


def _function(blob: bytes) -> Callable[..., Any]:
    f = _functions.get(blob)
    if f is None:
        if len(_functions) > 256:
            _functions.clear()
        f = _functions[blob] = pickle.loads(blob)
    return f


def _pickle_exception(e: BaseException) -> bytes | None:
    """The exception pickled twice over: whole (its own reduction, which keeps C-level
    fields such as ``errno`` or ``StopIteration.value``), and as its class, ``args`` and
    ``__dict__``, for exceptions whose own reduction cannot be undone (an ``__init__`` that
    takes other arguments than ``args``)."""
    try:
        whole = cloudpickle.dumps(e)
    except Exception:
        whole = None
    try:
        parts = cloudpickle.dumps((type(e), e.args, dict(getattr(e, "__dict__", {}))))
    except Exception:
        parts = None
    if whole is None and parts is None:
        return None
    return pickle.dumps((whole, parts))


def _unpickle_exception(blob: bytes) -> BaseException | None:
    whole, parts = pickle.loads(blob)
    if whole is not None:
        try:
            e = pickle.loads(whole)
            if isinstance(e, BaseException):
                return e
        except Exception:
            pass
    if parts is None:
        return None
    cls, args, state = pickle.loads(parts)
    try:
        e = cls(*args)
    except Exception:
        # Its __init__ wants something else: build it without, then restore its state.
        e = cls.__new__(cls)
        e.args = args
    e.__dict__.update(state)
    return e


def run_task(function: bytes, data: bytes, buffers: list) -> tuple:
    """Runs a pickled task in a worker: ``(True, data, buffers)`` with the pickled result,
    or ``(False, exception_pickle | None, type_name, message, traceback_text)``."""
    try:
        f = _function(function)
        args, kwargs = pickle.loads(data, buffers=buffers)
        result = f(*args, **kwargs)
        out = _dumps(result)
        return (True, out[0], out[1])
    except BaseException as e:  # the task's failure, whatever it is, goes to the caller
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return (False, _pickle_exception(e), f"{type(e).__module__}.{type(e).__qualname__}", str(e), tb)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass


def rebuild_exception(
    index: int, blob: bytes | None, type_name: str, message: str, tb: str
) -> BaseException:
    """The task's exception, of its own type when that can be rebuilt here, with the
    worker's traceback as ``__cause__``."""
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = _unpickle_exception(blob)
        except Exception:
            exc = None
    if exc is None:
        exc = WorkerTaskError(f"task {index} raised {type_name}: {message}")
    exc.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
    return exc
