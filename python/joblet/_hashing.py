"""``hash``: joblib's content hash of Python objects, computed by joblet's engine.

The walk is in Rust (``crates/joblet-py/src/hashing.rs``) and the hash is blake3: big array
buffers are hashed in place, without the GIL, on every core.
"""

from __future__ import annotations

import pickle
from typing import Any

from . import _core

#: joblib's ``hash_name`` values, and the length of the hex digest each gives.
_DIGEST_LENGTHS = {"md5": 32, "sha1": 40}


def hash(obj: Any, hash_name: str = "md5", coerce_mmap: bool = False) -> str:
    """A hex digest of ``obj``'s content, with joblib's rules: equal for equal content held
    in different objects, different when one element changes.

    - dicts, sets and frozensets: the order of their items does not count;
    - numpy arrays: their bytes, dtype (byte order included), shape and strides count, so a
      Fortran-ordered array and its C-ordered copy differ, and so do a non-contiguous view
      and its contiguous copy; so does the class: an ``np.memmap`` differs from an ndarray
      of the same content unless ``coerce_mmap`` is true;
    - functions and classes: by reference (module and name), as pickle saves them; an object
      pickle cannot save raises ``pickle.PicklingError``;
    - any other object: by its pickle, with the containers and arrays inside it hashed by
      the rules above.

    ``hash_name`` is accepted for joblib compatibility ("md5" or "sha1") and sets the length
    of the result: 32 or 40 hex digits, as joblib's. The digest itself is always blake3's
    (truncated), not md5's or sha1's: values differ from ``joblib.hash``'s; only equality
    between joblet's own values has a meaning.
    """
    length = _DIGEST_LENGTHS.get(hash_name) if isinstance(hash_name, str) else None
    if length is None:
        raise ValueError(
            "Valid options for 'hash_name' are {}. Got hash_name={!r} instead.".format(
                tuple(_DIGEST_LENGTHS), hash_name
            )
        )
    try:
        digest = _core.content_hash(obj, bool(coerce_mmap))
    except pickle.PicklingError as e:
        raise pickle.PicklingError(f"PicklingError while hashing {obj!r}: {e!r}") from e
    except AttributeError as e:
        # The C pickler refuses local functions and classes with an AttributeError where
        # joblib's Python pickler raises PicklingError: same error, joblib's type.
        if not str(e).startswith("Can't pickle"):
            raise
        raise pickle.PicklingError(f"PicklingError while hashing {obj!r}: {e!r}") from e
    return digest[:length]
