"""The Python half of how a task crosses to a worker process and its outcome back.

joblet._core pickles arguments and results itself, with the C pickler (protocol 5: buffers
of arrays and anything else with the buffer protocol travel out of band, as raw blocks next
to the pickle stream, never through it), and runs the task in the worker. It comes here for
what needs cloudpickle: functions (lambdas, closures and ``__main__`` functions travel by
value; pickled once per distinct function per call, unpickled once per distinct pickle in
each worker), objects the C pickler cannot pickle or pickles by a reference to ``__main__``;
and for exceptions: a task's described in the worker, rebuilt in the caller.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any, Callable

import cloudpickle

from ._errors import RemoteTraceback, WorkerTaskError

def cloud_dumps(obj: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """``obj`` pickled by cloudpickle (protocol 5), with its out-of-band buffers: what the C
    pickler (which joblet._core tries first, in Rust) could not do, or did by a reference to
    ``__main__`` that the other process cannot resolve."""
    buffers: list[pickle.PickleBuffer] = []
    return cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append), buffers


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
        return cloud_dumps((args, kwargs or {}))
    except Exception as e:
        raise pickle.PicklingError(
            f"task {index}: could not pickle the task to send it to a worker process: "
            f"{type(e).__name__}: {e}"
        ) from e


def memmap_reference(a: Any) -> Any:
    """A stand-in for a ``numpy.memmap`` argument that pickles as a reference to its file (the
    worker maps the same bytes: writes through an ``r+`` mapping reach the caller's array),
    or None for one that must travel by value: not backed by a file, not contiguous, or
    copy-on-write. The file must still be there (and the same) when the worker maps it."""
    import mmap

    import numpy as np

    if a.filename is None or not (a.flags.c_contiguous or a.flags.f_contiguous):
        return None
    if a.mode == "c":
        # Copy-on-write: the caller's own writes live only in its private pages, which a
        # worker mapping the file would not see.
        return None
    owner = a
    while isinstance(owner, np.memmap) and not isinstance(owner.base, mmap.mmap):
        owner = owner.base
    if not isinstance(owner, np.memmap):
        return None
    start = a.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
    # "w+" created the file: mapping it again must not truncate it.
    mode = {"w+": "r+"}.get(owner.mode, owner.mode)
    order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
    return _MappedArray(a.filename, a.dtype, mode, owner.offset + start, a.shape, order)


class _MappedArray:
    """A ``numpy.memmap`` by reference: rebuilt in the worker over the same file."""

    __slots__ = ("args",)

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __reduce__(self) -> tuple:
        return _open_memmap, self.args


def _open_memmap(filename: str, dtype: Any, mode: str, offset: int, shape: tuple, order: str) -> Any:
    import numpy as np

    return np.memmap(filename, dtype=dtype, mode=mode, offset=offset, shape=shape, order=order)


# Worker side ----------------------------------------------------------------------------


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


def task_failure(e: BaseException) -> tuple[bytes | None, str, str, str]:
    """A task's exception, for the caller: pickled when possible (``None`` otherwise), its
    type's name, its message and its formatted traceback."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return _pickle_exception(e), f"{type(e).__module__}.{type(e).__qualname__}", str(e), tb


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
