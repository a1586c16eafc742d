"""``Memory``: joblib's disk cache of function results, on joblet's store.

A cached call lives in ``<location>/joblet/<function>/<hash[:2]>/<hash>/`` (the engine's
``joblet::Store``, ``_core.Store`` here): ``output.pkl`` written by ``joblet.dump``,
``metadata.json`` (duration, the arguments' reprs, time), and an ``access`` file whose
modification time is the entry's last use. An entry is written into a temporary directory
and renamed into place, so readers see a whole entry or none, and of several processes
computing the same call one entry is kept. ``<hash>`` is ``joblet.hash`` of the function's
identity and its arguments bound to its signature (defaults filled in, ``ignore`` left out).
Each function directory records the source its entries were computed with
(``func_code.py``): a different source clears them.

A ``backend`` other than ``"local"`` (a class given to ``register_store_backend``), or a
store-backend instance as ``location``, replaces that store: every operation then goes
through the backend's joblib-style methods (``_store_backends.py``), and ``_backend`` holds
it (None for the engine's store, whose path stays as it was: it is the one benchmarked).
"""

from __future__ import annotations

import datetime
import functools
import inspect
import json
import logging
import os
import pprint
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _core
from ._hashing import hash as _hash
from ._persist import dump, load
from ._store_backends import accepted_keywords, parse_size, print_loading, store_backend_for
from ._store_backends import format_time as _format_time
from ._store_backends import register_store_backend as register_store_backend  # joblib.memory's

_OUTPUT = "output.pkl"
_METADATA = "metadata.json"
_FIRST_LINE = "# first line:"
_MMAP_MODES = (None, "r+", "r", "w+", "c")


def _format_arg(arg: Any) -> str:
    text = pprint.pformat(arg, indent=2)
    return text if len(text) <= 1500 else text[:700] + "..."


def _func_name(func: Callable[..., Any]) -> Tuple[str, str]:
    """(module, qualified name) of a callable; a ``__main__`` function's module names its
    file too, so that two scripts' ``main.f`` do not share entries."""
    module = getattr(func, "__module__", None) or "<unknown>"
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    if module == "__main__":
        code = getattr(func, "__code__", None)
        if code is not None:
            module = "__main__--" + os.path.splitext(code.co_filename)[0]
    return module, name


def _short_name(func: Callable[..., Any]) -> str:
    return getattr(func, "__name__", None) or repr(func)


def _signature_text(func: Callable[..., Any], args: tuple, kwargs: dict) -> str:
    parts = [_format_arg(a) for a in args]
    parts += ["%s=%s" % (k, _format_arg(v)) for k, v in kwargs.items()]
    return "%s(%s)" % (_short_name(func), ", ".join(parts))


def _code_fingerprint(code: Any) -> str:
    """Compiled code as text, stable from process to process (nested code objects by
    their own fingerprint, not their address)."""
    consts = [
        _code_fingerprint(c) if inspect.iscode(c) else repr(c) for c in code.co_consts
    ]
    return "%s %s %r" % (code.co_code.hex(), consts, code.co_names)


def _source(func: Callable[..., Any]) -> Tuple[str, Optional[str], int]:
    """``(code, source file, first line)``: the text a function's entries are tied to (its
    source, or, where the source cannot be read, as in ``python -c``, its compiled code;
    first line -1 then)."""
    code = getattr(func, "__code__", None)
    source_file = code.co_filename if code is not None else None
    try:
        lines, first = inspect.getsourcelines(func)
        return "".join(lines), source_file, first
    except (OSError, TypeError):
        pass
    if code is not None:
        return "# no source: code %s\n" % _code_fingerprint(code), source_file, -1
    return "# no source: %r\n" % (func,), None, -1


def _with_first_line(code: str, first_line: int) -> str:
    return "%s %d\n%s" % (_FIRST_LINE, first_line, code)


def _split_first_line(stored: str) -> Tuple[str, int]:
    """The recorded code and its first line (-1 when not recorded)."""
    head, _, rest = stored.partition("\n")
    if head.startswith(_FIRST_LINE):
        try:
            return rest, int(head[len(_FIRST_LINE) :])
        except ValueError:
            pass
    return stored, -1


#: How many times a whole store was cleared in this process: a function's source, checked
#: once against its directory, is checked again after a ``Memory.clear`` (as joblib empties
#: its table of checked functions).
_clears = 0


class JobLibCollisionWarning(UserWarning):
    """Two functions may share a name, and so a cache directory (joblib's warning)."""


class _Binder:
    """A function's parameters, read once: binds a call's arguments by name in a few
    dictionary operations (``inspect.Signature.bind`` costs several microseconds, a good
    part of a cache hit). A call it cannot bind goes to ``Signature.bind``, which binds it
    or says what is wrong."""

    def __init__(self, target: Callable[..., Any]) -> None:
        self.signature = inspect.signature(target)
        self.positional: List[Tuple[str, bool]] = []  # (name, positional only)
        self.keyword_only: List[str] = []
        self.var_positional = False
        self.var_keyword = False
        self.defaults: Dict[str, Any] = {}
        for name, param in self.signature.parameters.items():
            if param.kind is param.VAR_POSITIONAL:
                self.var_positional = True
            elif param.kind is param.VAR_KEYWORD:
                self.var_keyword = True
            elif param.kind is param.KEYWORD_ONLY:
                self.keyword_only.append(name)
            else:
                self.positional.append((name, param.kind is param.POSITIONAL_ONLY))
            if param.default is not param.empty:
                self.defaults[name] = param.default

    def bind(self, args: tuple, kwargs: dict) -> Optional[Dict[str, Any]]:
        """The arguments by name (``"*"``, ``"**"`` for the extra ones), or None."""
        if len(args) > len(self.positional) and not self.var_positional:
            return None
        left = dict(kwargs) if kwargs else {}
        out: Dict[str, Any] = {}
        for i, (name, positional_only) in enumerate(self.positional):
            if i < len(args):
                if not positional_only and name in left:
                    return None
                out[name] = args[i]
            elif not positional_only and name in left:
                out[name] = left.pop(name)
            elif name in self.defaults:
                out[name] = self.defaults[name]
            else:
                return None
        if self.var_positional:
            out["*"] = list(args[len(self.positional) :])
        for name in self.keyword_only:
            if name in left:
                out[name] = left.pop(name)
            elif name in self.defaults:
                out[name] = self.defaults[name]
            else:
                return None
        if self.var_keyword:
            out["**"] = left
        elif left:
            return None
        return out


def bind_arguments(
    func: Callable[..., Any],
    ignore: List[str],
    args: tuple,
    kwargs: dict,
    binder: Optional[_Binder] = None,
) -> Dict[str, Any]:
    """The call's arguments by parameter name, defaults filled in (joblib's
    ``filter_args``): extra positional ones under ``"*"``, extra keywords under ``"**"``,
    the names in ``ignore`` left out. A bound method's instance counts as its first
    parameter. Raises ValueError for a call the signature does not accept, or an ``ignore``
    name it does not have."""
    if isinstance(ignore, str):
        raise ValueError(
            "ignore must be a list of parameter names, not the string %r" % (ignore,)
        )
    if not (inspect.isfunction(func) or inspect.ismethod(func)):
        if ignore:
            warnings.warn(
                "Cannot inspect object %r, ignore list will not work." % (func,), stacklevel=3
            )
        return {"*": list(args), "**": dict(kwargs)}
    target = func.__func__ if inspect.ismethod(func) else func
    if inspect.ismethod(func):
        args = (func.__self__,) + tuple(args)
    if binder is None:
        binder = _Binder(target)
    out = binder.bind(args, kwargs)
    if out is None:
        out = _bind_slowly(func, binder.signature, args, kwargs)
    for name in ignore:
        if name not in out:
            raise ValueError(
                "Ignore list: argument '%s' is not defined for function %s%s"
                % (name, _short_name(func), binder.signature)
            )
        del out[name]
    return out


def _bind_slowly(
    func: Callable[..., Any], signature: inspect.Signature, args: tuple, kwargs: dict
) -> Dict[str, Any]:
    """``Signature.bind``: the arguments by name, or joblib's ValueError."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as e:
        reason = str(e)
        if "too many positional" in reason:
            what = "Too many arguments for"
        elif "unexpected keyword" in reason:
            what = "Too many keyword arguments for"
        elif "multiple values" in reason:
            what = "An argument was given both as positional and as keyword for"
        else:
            what = "Wrong number of arguments for"
        raise ValueError(
            "%s %s%s (%s):\n    %s was called."
            % (what, _short_name(func), signature, reason, _signature_text(func, args, kwargs))
        ) from None
    bound.apply_defaults()
    out: Dict[str, Any] = {}
    for name, param in signature.parameters.items():
        value = bound.arguments[name]
        if param.kind is param.VAR_POSITIONAL:
            out["*"] = list(value)
        elif param.kind is param.VAR_KEYWORD:
            out["**"] = dict(value)
        else:
            out[name] = value
    return out


def _open_store(location: Any) -> "_core.Store":
    if isinstance(location, _core.Store):
        return location
    return _core.Store(os.fspath(location))


def _user_store(location: Any, backend: Any, verbose: int, options: Dict[str, Any]) -> Any:
    """The user's store backend at ``location`` (an instance, or one of the class
    registered as ``backend``), or None: no location, or the engine's store."""
    if location is None or isinstance(location, _core.Store):
        return None
    return store_backend_for(location, backend, verbose, options)


def _keywords(method: Any, **values: Any) -> Dict[str, Any]:
    """Those of ``values`` that a backend's method takes (joblet's mixin takes
    ``mmap_mode`` and ``compress``; a backend written for joblib reads them from the
    attributes its ``configure`` set)."""
    accepted = accepted_keywords(method)
    return {k: v for k, v in values.items() if k in accepted}


class _Logged:
    """joblib's ``Logger.warn``: a warning on the ``logging`` module, prefixed by the
    object's repr."""

    def warn(self, msg: str) -> None:
        logging.getLogger("joblet.memory").warning("[%s]: %s" % (self, msg))

    def info(self, msg: str) -> None:
        logging.getLogger("joblet.memory").info("[%s]: %s" % (self, msg))


class _OnStore:
    """The store at ``_location``, opened on first use (and again after unpickling); or
    the user's store backend ``_backend``."""

    _location: Any
    _store_obj: Optional["_core.Store"]
    _backend: Any = None

    @property
    def _store(self) -> "_core.Store":
        if self._store_obj is None:
            self._store_obj = _core.Store(self._location)
        return self._store_obj

    @property
    def store_backend(self) -> Any:
        """The engine's store, or the user's store backend."""
        return self._store if self._backend is None else self._backend


class MemorizedResult(_OnStore, _Logged):
    """A reference to a cached value (what ``call_and_shelve`` returns): small and
    picklable; ``get()`` loads the value, ``clear()`` deletes it."""

    def __init__(
        self,
        location: Any,
        call_id: Tuple[str, str],
        backend: str = "local",
        mmap_mode: Optional[str] = None,
        verbose: int = 0,
        timestamp: Optional[float] = None,
        metadata: Optional[dict] = None,
    ) -> None:
        self._backend = _user_store(location, backend, verbose, {"mmap_mode": mmap_mode})
        self._call_id = tuple(call_id)
        self.backend = backend
        self.mmap_mode = mmap_mode
        self.verbose = verbose
        self.timestamp = timestamp
        self._store_obj: Optional[_core.Store] = None
        if self._backend is not None:
            self._location = self._backend.location
            if metadata is None:
                metadata = self._backend.get_metadata(self._call_id)
        else:
            store = _open_store(location)
            self._location = os.fspath(store.location)
            self._store_obj = store
            if metadata is None:
                metadata = _read_metadata(store, *self._call_id)
        self.metadata = metadata
        self.duration = metadata.get("duration", None)


    @property
    def func(self) -> str:
        return self._call_id[0]

    @property
    def func_id(self) -> str:
        return self._call_id[0]

    @property
    def args_id(self) -> str:
        return self._call_id[1]

    def get(self) -> Any:
        """The cached value; KeyError if it was cleared or is damaged."""
        if self._backend is not None:
            load_item = self._backend.load_item
            try:
                return load_item(
                    self._call_id,
                    verbose=self.verbose,
                    timestamp=self.timestamp,
                    metadata=self.metadata,
                    **_keywords(load_item, mmap_mode=self.mmap_mode),
                )
            except ValueError as e:
                raise KeyError(
                    "Error while trying to load a MemorizedResult's value: the item is "
                    "damaged: %s" % (self._backend.get_item_info(self._call_id)["location"],)
                ) from e
        func_id, args_id = self._call_id
        path = os.path.join(self._store.entry_path(func_id, args_id), _OUTPUT)
        if self.verbose > 1:
            print("[Memory]: Loading %s from %s" % (func_id, path))
        try:
            value = load(path, mmap_mode=self.mmap_mode)
        except FileNotFoundError as e:
            raise KeyError("Non-existing item (may have been cleared): %s" % path) from e
        except ValueError as e:
            raise KeyError(
                "Error while trying to load a MemorizedResult's value: the entry is "
                "damaged: %s" % path
            ) from e
        self._store.touch(func_id, args_id)
        return value

    def clear(self) -> None:
        """Deletes the cached value."""
        if self._backend is not None:
            self._backend.clear_item(self._call_id)
        else:
            self._store.remove(*self._call_id)

    def __repr__(self) -> str:
        return '%s(location="%s", func="%s", args_id="%s")' % (
            type(self).__name__,
            self._location,
            self.func_id,
            self.args_id,
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_store_obj"] = None
        state["timestamp"] = None
        return state


class NotMemorizedResult:
    """What ``call_and_shelve`` returns without a cache (or for a value that could not be
    stored): the value itself."""

    __slots__ = ("value", "valid")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.valid = True

    def get(self) -> Any:
        if self.valid:
            return self.value
        raise KeyError("No value stored.")

    def clear(self) -> None:
        self.valid = False
        self.value = None

    def __repr__(self) -> str:
        if self.valid:
            return "%s(%s)" % (type(self).__name__, pprint.pformat(self.value))
        return type(self).__name__ + " with no value"

    def __getstate__(self) -> dict:
        return {"valid": self.valid, "value": self.value}

    def __setstate__(self, state: dict) -> None:
        self.valid = state["valid"]
        self.value = state["value"]


class NotMemorizedFunc:
    """A function under ``Memory(location=None)``: called every time, nothing stored."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def call_and_shelve(self, *args: Any, **kwargs: Any) -> NotMemorizedResult:
        return NotMemorizedResult(self.func(*args, **kwargs))

    def call(self, *args: Any, **kwargs: Any) -> Tuple[Any, dict]:
        return self.func(*args, **kwargs), {}

    def check_call_in_cache(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def clear(self, warn: bool = True) -> None:
        pass

    def __repr__(self) -> str:
        return "%s(func=%s)" % (type(self).__name__, self.func)


def _read_metadata(store: "_core.Store", func_id: str, args_id: str) -> dict:
    path = os.path.join(store.entry_path(func_id, args_id), _METADATA)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class MemorizedFunc(_OnStore, _Logged):
    """A function whose results are cached (what ``Memory.cache`` returns): called like the
    function; ``call``, ``call_and_shelve``, ``check_call_in_cache`` and ``clear``."""

    def __init__(
        self,
        func: Callable[..., Any],
        location: Any,
        backend: str = "local",
        ignore: Optional[List[str]] = None,
        mmap_mode: Optional[str] = None,
        compress: Any = False,
        verbose: int = 1,
        timestamp: Optional[float] = None,
        cache_validation_callback: Optional[Callable[[dict], bool]] = None,
    ) -> None:
        self._backend = _user_store(
            location, backend, verbose, {"compress": compress, "mmap_mode": mmap_mode}
        )
        self._store_obj: Optional[_core.Store] = None
        if self._backend is not None:
            self._location = self._backend.location
        else:
            store = _open_store(location)
            self._location = os.fspath(store.location)
            self._store_obj = store
        self.func = func
        self.backend = backend
        self.ignore = list(ignore) if ignore is not None else []
        self.mmap_mode = mmap_mode
        self.compress = compress
        self._verbose = verbose
        self.timestamp = timestamp if timestamp is not None else time.time()
        self.cache_validation_callback = cache_validation_callback
        self.func_id = _core.Store.function_dir_name(*_func_name(func))
        self._code: Optional[Tuple[str, Optional[str], int]] = None
        self._code_id: Optional[int] = None
        self._code_digest: Optional[str] = None
        self._checked_code: Optional[Tuple[Tuple[str, Optional[str], int], int]] = None
        self._binder: Optional[_Binder] = None
        try:
            functools.update_wrapper(self, func)
        except Exception:
            pass  # objects such as ufuncs
        self.__doc__ = "Memoized version of %s" % (getattr(func, "__doc__", None),)
        if self._backend is not None:
            # The function's location, as joblib creates it (a backend may expect it).
            self._backend.store_cached_func_code([self.func_id])

    def _func_code_info(self) -> Tuple[str, Optional[str], int]:
        """``(code, source file, first line)`` of the function, read again when its
        ``__code__`` is replaced."""
        code_obj = getattr(self.func, "__code__", None)
        if code_obj is not None:
            if self._code_id is None:
                self._code_id = id(code_obj)
            elif self._code_id != id(code_obj):
                self._code = None
                self._code_id = id(code_obj)
        if self._code is None:
            self._code = _source(self.func)
            self._code_digest = None
        return self._code

    def _func_code(self) -> str:
        """The text recorded in the function's directory."""
        code, _, first_line = self._func_code_info()
        return _with_first_line(code, first_line)

    # -- the key ----------------------------------------------------------------------

    def _arguments(self, args: tuple, kwargs: dict) -> Dict[str, Any]:
        binder = self._binder
        if binder is not None and not self.ignore:
            # The usual case, kept short: a plain function, bound without trouble.
            out = binder.bind(args, kwargs)
            if out is not None:
                return out
        if binder is None and inspect.isfunction(self.func):
            self._binder = binder = _Binder(self.func)
        return bind_arguments(self.func, self.ignore, args, kwargs, binder)

    def _metadata_since(self, args: tuple, kwargs: dict, start: float) -> Dict[str, Any]:
        """joblib's metadata of an entry computed from ``start`` (``time.time()``) to now."""
        now = time.time()
        try:
            arguments = self._arguments(args, kwargs)
        except ValueError:
            arguments = {}
        return {
            "duration": now - start,
            "input_args": {k: repr(v) for k, v in arguments.items()},
            "time": now,
        }

    def _get_args_id(self, *args: Any, **kwargs: Any) -> str:
        """The entry's key: the function's name and code, and the arguments. With the code
        in the key, two functions that share a name (and a directory) never share an
        entry, even before the check of the recorded source clears the other's."""
        code = self._func_code_info()
        if self._code_digest is None:
            self._code_digest = _hash(code[0])
        arguments = self._arguments(args, kwargs)
        return _hash(
            (self.func_id, self._code_digest, arguments), coerce_mmap=self.mmap_mode is not None
        )

    # -- checks -----------------------------------------------------------------------

    def _check_previous_func_code(self, stacklevel: int = 5) -> bool:
        """Whether the entries on disk were computed with this code (its first line may
        differ); if not, they are cleared and this code recorded. Warns as joblib does
        when two functions may share the directory."""
        info = self._func_code_info()
        checked = self._checked_code
        if checked is not None and checked[0] is info and checked[1] == _clears:
            # Checked already in this process (as joblib's in-memory table of functions):
            # the key holds the code, so entries of other code are never used anyway.
            return True
        code, source_file, first_line = info
        stored = self._stored_func_code()
        if stored is not None and _split_first_line(stored)[0] == code:
            self._remember_checked(info)
            return True
        self._checked_code = None
        if stored is None:
            self._record_func_code(_with_first_line(code, first_line))
            self._remember_checked(info)
            return False
        old_code, old_first_line = _split_first_line(stored)
        name = _short_name(self.func)
        if old_first_line == first_line == -1 or name == "<lambda>":
            where = name if first_line == -1 else "%s (%s:%d)" % (name, source_file, first_line)
            warnings.warn(
                JobLibCollisionWarning("Cannot detect name collisions for function '%s'" % where),
                stacklevel=stacklevel,
            )
        if old_first_line != first_line and old_first_line > 0 and source_file is not None:
            # The old code still where it was: another function of the same name.
            if os.path.exists(source_file):
                n = len(old_code.splitlines())
                try:
                    with open(source_file, encoding="utf-8") as f:
                        lines = f.readlines()[old_first_line - 1 : old_first_line - 1 + n]
                    collision = "".join(lines).rstrip() == old_code.rstrip()
                except (OSError, ValueError):
                    collision = False
            else:
                collision = source_file.startswith("<doctest ")
            if collision:
                warnings.warn(
                    JobLibCollisionWarning(
                        "Possible name collisions between functions '%s' (%s:%d) and "
                        "'%s' (%s:%d)"
                        % (name, source_file, old_first_line, name, source_file, first_line)
                    ),
                    stacklevel=stacklevel,
                )
        if self._verbose > 10:
            self.warn("Function %s (identified by %s) has changed." % (name, self.func_id))
        self.clear(warn=True)  # records this source
        self._remember_checked(info)
        return False

    def _stored_func_code(self) -> Optional[str]:
        """The source recorded in the function's directory, or None."""
        if self._backend is None:
            return self._store.func_code(self.func_id)
        try:
            return self._backend.get_cached_func_code([self.func_id])
        except OSError:
            return None

    def _record_func_code(self, text: str) -> None:
        if self._backend is None:
            self._store.set_func_code(self.func_id, text)
        else:
            self._backend.store_cached_func_code([self.func_id], text)

    def _metadata(self, call_id: Tuple[str, str]) -> dict:
        if self._backend is None:
            return _read_metadata(self._store, *call_id)
        return self._backend.get_metadata(call_id)

    def _remove(self, call_id: Tuple[str, str]) -> None:
        if self._backend is None:
            self._store.remove(*call_id)
        else:
            self._backend.clear_item(call_id)

    def _remember_checked(self, info: Tuple[str, Optional[str], int]) -> None:
        """Skips later checks of this source, except for lambdas and nameless callables,
        checked every time (as joblib does: they collide too easily)."""
        if getattr(self.func, "__name__", "<lambda>") != "<lambda>":
            self._checked_code = (info, _clears)

    def _is_in_cache_and_valid(self, call_id: Tuple[str, str], hit: bool = False) -> Any:
        """Whether the entry is there and valid; with ``hit``, its directory (or None),
        its access recorded."""
        if not self._check_previous_func_code():
            return None if hit else False
        if self._backend is None:
            path = self._store.hit(*call_id) if hit else self._store.contains(*call_id)
        else:
            path = bool(self._backend.contains_item(call_id))
        if not path:
            return None if hit else False
        if self.cache_validation_callback is not None:
            if not self.cache_validation_callback(self._metadata(call_id)):
                self._remove(call_id)
                return None if hit else False
        return path

    def check_call_in_cache(self, *args: Any, **kwargs: Any) -> bool:
        """Whether this call's result is cached and valid (nothing is computed)."""
        call_id = (self.func_id, self._get_args_id(*args, **kwargs))
        return self._is_in_cache_and_valid(call_id)

    # -- calls ------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._cached_call(args, kwargs, shelving=False)[0]

    def call_and_shelve(self, *args: Any, **kwargs: Any) -> Any:
        """Computes (or finds) the result and returns a ``MemorizedResult`` reference."""
        return self._cached_call(args, kwargs, shelving=True)[0]

    def call(self, *args: Any, **kwargs: Any) -> Tuple[Any, dict]:
        """Computes the result whatever the cache holds, stores it, and returns
        ``(output, metadata)``."""
        call_id = (self.func_id, self._get_args_id(*args, **kwargs))
        return self._call(call_id, args, kwargs, replace=True)

    def _cached_call(self, args: tuple, kwargs: dict, shelving: bool) -> Tuple[Any, dict]:
        args_id = self._get_args_id(*args, **kwargs)
        call_id = (self.func_id, args_id)
        if self._verbose >= 20:
            logging.basicConfig(level=logging.INFO)  # as joblib: these are info lines
            if self._backend is None:
                location = os.path.dirname(os.path.dirname(self._store.entry_path(*call_id)))
            else:
                location = self._backend.get_cached_func_info([self.func_id])["location"]
            self.info(
                "Querying %s with signature\n%s.\n\n(argument hash %s)\n\n"
                "The store location is %s."
                % (
                    _short_name(self.func),
                    _signature_text(self.func, args, kwargs),
                    args_id,
                    location,
                )
            )
        entry = self._is_in_cache_and_valid(call_id, hit=True)
        if entry is not None:
            if shelving:
                return self._memorized_result(call_id), {}
            start = time.time() if self._verbose > 4 else 0.0
            try:
                output = self._load(call_id, entry=entry)
            except Exception as e:
                warnings.warn(
                    "joblet.Memory: could not load the cached result of %s (%s: %s); "
                    "computing it again"
                    % (_signature_text(self.func, args, kwargs), type(e).__name__, e),
                    stacklevel=3,
                )
                self._remove(call_id)
            else:
                if self._verbose > 4:
                    self._print_duration(time.time() - start, context="cache loaded ")
                return output, {}
        if self._verbose > 10:
            self.warn(
                "Computing func %s, argument hash %s in location %s"
                % (_short_name(self.func), args_id, self._location)
            )
        return self._call(call_id, args, kwargs, shelving)

    def _call(
        self,
        call_id: Tuple[str, str],
        args: tuple,
        kwargs: dict,
        shelving: bool = False,
        replace: bool = False,
    ) -> Tuple[Any, dict]:
        self._before_call(args, kwargs)
        start = time.time()
        output = self.func(*args, **kwargs)
        return self._after_call(call_id, args, kwargs, shelving, output, start, replace)

    def _before_call(self, args: tuple, kwargs: dict) -> None:
        if self._verbose > 0:
            print(
                "%s\n[Memory] Calling %s...\n%s"
                % (
                    "_" * 80,
                    ".".join(_func_name(self.func)),
                    _signature_text(self.func, args, kwargs),
                )
            )

    def _after_call(
        self,
        call_id: Tuple[str, str],
        args: tuple,
        kwargs: dict,
        shelving: bool,
        output: Any,
        start: float,
        replace: bool = False,
    ) -> Tuple[Any, dict]:
        stored = self._persist(call_id, output, args, kwargs, start, replace)
        if stored is None:
            return (NotMemorizedResult(output) if shelving else output), {}
        metadata = stored
        if self._verbose > 0:
            self._print_duration(metadata["duration"])
        if shelving:
            return self._memorized_result(call_id, metadata), metadata
        if self.mmap_mode is not None:
            # Mapped from the first call on, as later calls will be.
            output = self._load(call_id, metadata)
        return output, metadata

    def _persist(
        self,
        call_id: Tuple[str, str],
        output: Any,
        args: tuple,
        kwargs: dict,
        start: float,
        replace: bool = False,
    ) -> Optional[dict]:
        """Writes the entry (temporary directory, renamed into place); its metadata, or
        None (with a warning, nothing left behind) when the output cannot be stored: it
        cannot be pickled, or the store failed (a full disk, a concurrent ``clear``)."""

        def not_stored(e: BaseException) -> None:
            warnings.warn(
                "joblet.Memory: the result of %s cannot be stored (%s: %s); it is "
                "returned but not cached"
                % (_signature_text(self.func, args, kwargs), type(e).__name__, e),
                stacklevel=5,
            )

        if self._backend is not None:
            try:
                return self._persist_to_backend(call_id, output, args, kwargs, start)
            except Exception as e:
                not_stored(e)
                return None
        try:
            tmp = self._store.begin(*call_id)
        except OSError as e:
            not_stored(e)
            return None
        try:
            try:
                dump(output, os.path.join(tmp, _OUTPUT), compress=self.compress)
            except Exception as e:
                not_stored(e)
                return None
            metadata = self._metadata_since(args, kwargs, start)
            try:
                with open(os.path.join(tmp, _METADATA), "w", encoding="utf-8") as f:
                    json.dump(metadata, f)
                # The source first: an entry is never there without its source.
                if self._store.func_code(self.func_id) is None:
                    self._store.set_func_code(self.func_id, self._func_code())
                if replace:
                    # .call() recomputes: its result replaces the stored one (found by
                    # review: the old entry was kept). Between the two steps a concurrent
                    # writer's entry may land; it is as fresh, and kept.
                    self._store.remove(*call_id)
                self._store.commit(call_id[0], call_id[1], tmp)
            except OSError as e:
                not_stored(e)
                return None
            tmp = None
            return metadata
        finally:
            if tmp is not None:
                try:
                    self._store.abort(tmp)
                except OSError:
                    pass  # the store's directory went away: so did the temporary

    def _persist_to_backend(
        self, call_id: Tuple[str, str], output: Any, args: tuple, kwargs: dict, start: float
    ) -> Optional[dict]:
        """``_persist`` on a user's store backend, as joblib drives one: ``dump_item``
        (which warns and answers False when the output cannot be stored), then
        ``store_metadata``. The item replaces any stored one (``_move_item``)."""
        backend = self._backend
        if self._stored_func_code() is None:
            self._record_func_code(self._func_code())
        dump_item = backend.dump_item
        stored = dump_item(
            call_id, output, verbose=self._verbose, **_keywords(dump_item, compress=self.compress)
        )
        if stored is False:
            return None
        metadata = self._metadata_since(args, kwargs, start)
        backend.store_metadata(call_id, metadata)
        return metadata

    def _load(
        self, call_id: Tuple[str, str], metadata: Optional[dict] = None, entry: Any = None
    ) -> Any:
        """The entry's output; ``entry``: its directory, found (and its access recorded)
        by the caller."""
        if self._backend is not None:
            if metadata is None and self._verbose > 1:
                metadata = self._metadata(call_id)  # the arguments, for the message
            load_item = self._backend.load_item
            return load_item(
                call_id,
                verbose=self._verbose,
                timestamp=self.timestamp,
                metadata=metadata,
                **_keywords(load_item, mmap_mode=self.mmap_mode),
            )
        if entry is None:
            entry = self._store.hit(*call_id)
            if entry is None:
                raise KeyError("Non-existing item (may have been cleared): %s" % (call_id,))
        path = os.path.join(entry, _OUTPUT)
        if self._verbose > 1:
            if metadata is None:
                metadata = _read_metadata(self._store, *call_id)
            print_loading(_short_name(self.func), path, self._verbose, self.timestamp, metadata)
        return load(path, mmap_mode=self.mmap_mode)

    def _memorized_result(
        self, call_id: Tuple[str, str], metadata: Optional[dict] = None
    ) -> MemorizedResult:
        return MemorizedResult(
            self.store_backend,
            call_id,
            backend=self.backend,
            mmap_mode=self.mmap_mode,
            verbose=self._verbose - 1,
            timestamp=self.timestamp,
            metadata=metadata,
        )

    def _print_duration(self, duration: float, context: str = "") -> None:
        msg = "%s %s- %s" % (_short_name(self.func), context, _format_time(duration))
        print(max(0, 80 - len(msg)) * "_" + msg)

    def clear(self, warn: bool = True) -> None:
        """Deletes this function's entries."""
        if self._verbose > 0 and warn:
            self.warn("Clearing function cache identified by %s" % self.func_id)
        if self._backend is None:
            self._store.clear(self.func_id)
        else:
            self._backend.clear_path([self.func_id])
        self._record_func_code(self._func_code())

    def __getstate__(self) -> dict:
        self._func_code_info()  # read the source here: a worker process may not find it
        state = self.__dict__.copy()
        state["_store_obj"] = None
        state["timestamp"] = None
        state["_code_id"] = None  # ids differ in another process
        state["_checked_code"] = None
        state["_binder"] = None
        return state

    def __repr__(self) -> str:
        return "%s(func=%s, location=%s)" % (type(self).__name__, self.func, self._location)


class AsyncNotMemorizedFunc(NotMemorizedFunc):
    """A coroutine function under ``Memory(location=None)``."""

    async def call_and_shelve(self, *args: Any, **kwargs: Any) -> NotMemorizedResult:
        return NotMemorizedResult(await self.func(*args, **kwargs))


class AsyncMemorizedFunc(MemorizedFunc):
    """A cached coroutine function: awaiting the call gives the (cached) result."""

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self._cached_call(args, kwargs, shelving=False)
        out = await out if inspect.iscoroutine(out) else out
        return out[0]

    async def call_and_shelve(self, *args: Any, **kwargs: Any) -> Any:
        out = self._cached_call(args, kwargs, shelving=True)
        out = await out if inspect.iscoroutine(out) else out
        return out[0]

    async def call(self, *args: Any, **kwargs: Any) -> Tuple[Any, dict]:
        return await super().call(*args, **kwargs)

    async def _call(
        self,
        call_id: Tuple[str, str],
        args: tuple,
        kwargs: dict,
        shelving: bool = False,
        replace: bool = False,
    ) -> Tuple[Any, dict]:
        self._before_call(args, kwargs)
        start = time.time()
        output = await self.func(*args, **kwargs)
        return self._after_call(call_id, args, kwargs, shelving, output, start, replace)


def _bytes_limit(limit: Any) -> Optional[int]:
    if limit is None:
        return None
    if isinstance(limit, str):
        return parse_size(limit)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("bytes_limit must be a non-negative int or a str, not %r" % (limit,))
    return limit


def _write_gitignore(directory: str) -> None:
    """A cache is no source: ``.gitignore`` in the location (as joblib 1.6), unless one is
    there."""
    path = os.path.join(directory, ".gitignore")
    if os.path.exists(path):
        return
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write("# Created by joblet automatically.\n*\n")
    except FileExistsError:
        pass
    except OSError as e:
        warnings.warn("Unable to write %s: %s" % (path, e))


class Memory(_Logged):
    """joblib's ``Memory``: ``cache`` wraps a function so that its results are stored
    under ``location`` and read back for the same arguments. ``location=None``: no cache
    (functions are called as they are). ``backend``: ``"local"`` (the engine's store) or
    a name given to ``register_store_backend``, whose class is configured with
    ``<location>/joblet`` and ``backend_options`` (with ``compress`` and ``mmap_mode``);
    ``location`` may also be a store-backend instance, used as it is."""

    _backend: Any = None

    def __init__(
        self,
        location: Any = None,
        backend: str = "local",
        mmap_mode: Optional[str] = None,
        compress: Any = False,
        verbose: int = 1,
        backend_options: Optional[dict] = None,
    ) -> None:
        if mmap_mode not in _MMAP_MODES:
            raise ValueError(
                "mmap_mode must be one of %s, not %r" % (list(_MMAP_MODES), mmap_mode)
            )
        self._verbose = verbose
        self.mmap_mode = mmap_mode
        self.timestamp = time.time()
        self.backend = backend
        self.compress = compress
        self.backend_options = dict(backend_options or {})
        if compress and mmap_mode is not None:
            warnings.warn("Compressed results cannot be memmapped", stacklevel=2)
        self.location = location
        self._store_obj: Optional[_core.Store] = None
        self._root: Optional[str] = None
        # A path gets the subdirectory "joblet", whichever backend stores there.
        is_path = isinstance(location, (str, os.PathLike))
        self._backend = _user_store(
            os.path.join(os.fspath(location), "joblet") if is_path else location,
            backend,
            verbose,
            {"compress": compress, "mmap_mode": mmap_mode, **self.backend_options},
        )
        if self._backend is None and isinstance(location, _core.Store):
            self._store_obj = location
            self._root = os.fspath(location.location)
        elif self._backend is None and location is not None:
            self._root = os.path.join(os.fspath(location), "joblet")
            self._store_obj = _core.Store(self._root)
            _write_gitignore(os.fspath(location))

    @property
    def store_backend(self) -> Any:
        """The engine's store (``"local"``), the user's store backend, or None."""
        if self._backend is not None:
            return self._backend
        if self._root is not None and self._store_obj is None:
            self._store_obj = _core.Store(self._root)
        return self._store_obj

    def cache(
        self,
        func: Optional[Callable[..., Any]] = None,
        ignore: Optional[List[str]] = None,
        verbose: Optional[int] = None,
        mmap_mode: Any = False,
        cache_validation_callback: Optional[Callable[[dict], bool]] = None,
    ) -> Any:
        """Wraps ``func`` (or, without it, returns a decorator) so that its results are
        cached. ``ignore``: parameter names left out of the key. ``verbose`` and
        ``mmap_mode``: by default the Memory's. ``cache_validation_callback(metadata)``:
        a cached result is used only if it returns True (see ``expires_after``)."""
        if cache_validation_callback is not None and not callable(cache_validation_callback):
            raise ValueError(
                "cache_validation_callback needs to be callable. "
                "Got %r." % (cache_validation_callback,)
            )
        if func is None:
            return functools.partial(
                self.cache,
                ignore=ignore,
                verbose=verbose,
                mmap_mode=mmap_mode,
                cache_validation_callback=cache_validation_callback,
            )
        coroutine = inspect.iscoroutinefunction(func)
        if self.store_backend is None:
            return AsyncNotMemorizedFunc(func) if coroutine else NotMemorizedFunc(func)
        if verbose is None:
            verbose = self._verbose
        if mmap_mode is False:
            mmap_mode = self.mmap_mode
        if isinstance(func, MemorizedFunc):
            func = func.func
        cls = AsyncMemorizedFunc if inspect.iscoroutinefunction(func) else MemorizedFunc
        return cls(
            func,
            location=self.store_backend,
            backend=self.backend,
            ignore=ignore,
            mmap_mode=mmap_mode,
            compress=self.compress,
            verbose=verbose,
            timestamp=self.timestamp,
            cache_validation_callback=cache_validation_callback,
        )

    def clear(self, warn: bool = True) -> None:
        """Deletes every cached result."""
        if warn:
            self.warn("Flushing completely the cache")
        store = self.store_backend
        if store is not None:
            global _clears
            _clears += 1
            store.clear()

    def reduce_size(
        self,
        bytes_limit: Any = None,
        items_limit: Optional[int] = None,
        age_limit: Optional[datetime.timedelta] = None,
    ) -> None:
        """Deletes cached results, least recently used first, until at most
        ``bytes_limit`` bytes (an int, or a str such as ``'10M'``) and ``items_limit``
        results are left, and every result not used within ``age_limit`` (a timedelta)."""
        store = self.store_backend
        if store is None:
            return
        if bytes_limit is None and items_limit is None and age_limit is None:
            return
        nbytes = _bytes_limit(bytes_limit)
        if items_limit is not None and (
            isinstance(items_limit, bool) or not isinstance(items_limit, int) or items_limit < 0
        ):
            raise ValueError("items_limit must be a non-negative int, not %r" % (items_limit,))
        age: Optional[float] = None
        if age_limit is not None:
            age = age_limit.total_seconds()
            if age < 0:
                raise ValueError("age_limit has to be a positive timedelta")
        if self._backend is not None:
            self._backend.enforce_store_limits(nbytes, items_limit, age_limit)
            return
        removed = store.reduce_size(nbytes, items_limit, age)
        if self._verbose > 10:
            for entry in removed:
                print("Deleting item %s" % (entry[2],))

    def eval(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(*args, **kwargs)``, through the cache."""
        if self.store_backend is None:
            return func(*args, **kwargs)
        return self.cache(func)(*args, **kwargs)

    def __repr__(self) -> str:
        where = self._root if self._backend is None else self._backend.location
        return "%s(location=%s)" % (type(self).__name__, where)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_store_obj"] = None
        state["timestamp"] = None
        return state


def expires_after(
    days: float = 0,
    seconds: float = 0,
    microseconds: float = 0,
    milliseconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    weeks: float = 0,
) -> Callable[[dict], bool]:
    """A ``cache_validation_callback``: a cached result is used only while younger than
    the duration given (``datetime.timedelta``'s arguments)."""
    limit = datetime.timedelta(
        days=days,
        seconds=seconds,
        microseconds=microseconds,
        milliseconds=milliseconds,
        minutes=minutes,
        hours=hours,
        weeks=weeks,
    ).total_seconds()

    def cache_validation_callback(metadata: dict) -> bool:
        return time.time() - metadata["time"] < limit

    return cache_validation_callback
