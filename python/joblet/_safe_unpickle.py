"""What ``load(..., allow_pickle=False)`` lets a file build, and how.

Naming only safe callables is not enough: pickle's BUILD step hands the file's own state to
the object's ``__setstate__``, and numpy's ``dtype.__setstate__`` does not check it (a file
could declare a field of Python objects while claiming the dtype holds none, and then fill
that field with arbitrary addresses); ``numpy.ndarray(...)`` called directly takes a buffer
and an offset (a negative one reads before the buffer). So in safe mode:

- a dtype's state is never given to numpy: only plain dtypes are accepted (no fields, no
  subarrays), rebuilt through numpy's public constructor from their kind, size, byte order
  and datetime unit;
- ``numpy.ndarray`` is only a tag for ``_reconstruct`` (and joblib's array wrapper), never
  called;
- ``bytearray`` takes only bytes.

Safe mode guards against code execution and memory corruption, not against a file that
asks for a lot of memory.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Dict, Tuple


class NdarrayTag:
    """Stands for ``numpy.ndarray`` in a safe load: usable as ``_reconstruct``'s subtype
    or as joblib's ``subclass``, refused as a callable."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError(
            "numpy.ndarray(...) cannot be called with allow_pickle=False"
        )


def _safe_bytearray(data: Any = b"") -> bytearray:
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("bytearray of something else than bytes refused")
    return bytearray(data)


def safe_globals() -> Dict[Tuple[str, str], Any]:
    """(module, name) -> what a safe load gets for it."""
    import collections

    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]

    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
        if subtype is not NdarrayTag:
            raise pickle.UnpicklingError("_reconstruct of another type than ndarray refused")
        return multiarray._reconstruct(np.ndarray, shape, dtype)

    table: Dict[Tuple[str, str], Any] = {
        ("numpy", "ndarray"): NdarrayTag,
        ("numpy", "memmap"): NdarrayTag,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): _safe_bytearray,
        ("builtins", "slice"): slice,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = reconstruct
        table[(module, "scalar")] = multiarray.scalar
    return table


def checked_dtype(dtype: Any, state: Any, path: str) -> Any:
    """The dtype that ``dtype`` (as numpy's REDUCE made it) with BUILD ``state`` stands
    for, made by numpy's public constructor; structured and subarray dtypes are refused."""
    import numpy as np

    refuse = pickle.UnpicklingError
    if not isinstance(state, tuple) or len(state) < 8:
        raise refuse(f"{path}: a dtype with a state numpy does not write")
    byteorder, subdescr, names, fields = state[1], state[2], state[3], state[4]
    if subdescr is not None or names is not None or fields is not None:
        raise refuse(
            f"{path}: structured and subarray dtypes are refused with allow_pickle=False"
        )
    if byteorder not in ("<", ">", "|", "="):
        raise refuse(f"{path}: a dtype with byte order {byteorder!r}")
    if dtype.kind in "mM":
        unit = "generic"
        if len(state) > 8 and isinstance(state[8], tuple) and len(state[8]) == 2:
            meta = state[8][1]
            if isinstance(meta, tuple) and len(meta) >= 2 and isinstance(meta[0], bytes):
                unit = f"{int(meta[1]) if int(meta[1]) != 1 else ''}{meta[0].decode('ascii')}"
        text = f"{dtype.kind}8" if unit == "generic" else f"{dtype.kind}8[{unit}]"
    else:
        text = dtype.str[1:]
    order = "" if byteorder == "|" else ("=" if byteorder == "=" else byteorder)
    try:
        made = np.dtype(order + text)
    except (TypeError, ValueError) as e:
        raise refuse(f"{path}: a dtype numpy does not make: {e}") from e
    if made.hasobject != (made.kind == "O"):
        raise refuse(f"{path}: an inconsistent dtype")
    return made


def install_safe_build(dispatch: Dict[int, Callable[..., None]]) -> None:
    """Makes BUILD, in a pure-Python unpickler's ``dispatch``, rebuild dtypes through
    ``checked_dtype`` (and leave every other object to the original BUILD) whenever the
    unpickler's ``_safe`` is true."""
    original = dispatch[pickle.BUILD[0]]

    def load_build(self: Any) -> None:
        import numpy as np

        if getattr(self, "_safe", False) and isinstance(self.stack[-2], np.dtype):
            state = self.stack.pop()
            before = self.stack[-1]
            made = checked_dtype(before, state, getattr(self, "_path", "<file>"))
            self.stack[-1] = made
            # It was memoized before BUILD: later references must get the same dtype.
            for key, value in list(self.memo.items()):
                if value is before:
                    self.memo[key] = made
            return
        original(self)

    dispatch[pickle.BUILD[0]] = load_build
