"""Store backends of ``Memory``: joblib 1.6's interface for keeping cached results
somewhere other than the local disk (a database, an object store, a dict in memory).

``"local"``, the default, is not a class here: it is the engine's store (``_core.Store``),
which ``_memory.py`` drives directly (entries renamed into place whole, sharded
directories, access times of their own). Every other backend is a class:

- a user writes the seven primitives of ``StoreBackendBase`` (``_open_item``,
  ``_item_exists``, ``_move_item``, ``create_location``, ``clear_location``, ``get_items``,
  ``configure``) and takes ``StoreBackendMixin``'s high-level methods, built on them;
- ``register_store_backend(name, cls)`` makes it ``Memory(location, backend=name)``, which
  creates one and calls its ``configure(location, verbose=..., backend_options=...)``; an
  instance given as ``location`` is used as it is;
- ``Memory`` then calls only the high-level methods (``load_item``, ``dump_item``,
  ``contains_item``, ``get_metadata``, ``store_metadata``, ``clear_item``, ``clear_path``,
  ``store_cached_func_code``, ``get_cached_func_code``, ``get_cached_func_info``,
  ``clear``, ``enforce_store_limits``), so a backend may also replace any of them.

The mixin's layout is joblib's: ``<location>/<function>/<argument hash>/output.pkl`` and
``metadata.json``, ``<location>/<function>/func_code.py``, every file written under a
temporary name and moved into place with ``_move_item``. Values go through ``joblet.dump``
and ``joblet.load`` on the binary file objects ``_open_item`` returns, so the bytes may
live anywhere; only ``mmap_mode`` needs a real file (see ``load_item``).

Classes written against joblib's own ``StoreBackendBase`` are accepted as they are: a class
with the seven primitives counts as a subclass here (``__subclasshook__``), whatever its
bases. Names registered with joblib itself are found too, when joblib is imported.
"""

from __future__ import annotations

import collections
import datetime
import inspect
import json
import os
import re
import sys
import time
import uuid
import warnings
import weakref
from abc import ABCMeta, abstractmethod
from typing import Any, Callable, Dict, List, Optional, Sequence

from ._persist import dump, load

#: What ``get_items`` lists: one cached result, its location, size in bytes and last access
#: (a ``datetime``).
CacheItemInfo = collections.namedtuple("CacheItemInfo", "path size last_access")

_OUTPUT = "output.pkl"
_METADATA = "metadata.json"
_FUNC_CODE = "func_code.py"

#: The methods a store backend writes; a class that has them all is a ``StoreBackendBase``.
_PRIMITIVES = (
    "_open_item",
    "_item_exists",
    "_move_item",
    "create_location",
    "clear_location",
    "get_items",
    "configure",
)


class CacheWarning(Warning):
    """A result could not be stored: it is returned, not cached (joblib's category)."""


def _has_methods(cls: type, names: Sequence[str]) -> bool:
    for name in names:
        for klass in cls.__mro__:
            if name in klass.__dict__:
                if klass.__dict__[name] is None:
                    return False
                break
        else:
            return False
    return True


class StoreBackendBase(metaclass=ABCMeta):
    """What a store backend implements: seven primitives on *locations*, strings that
    name places in the store (on a filesystem, paths: the item ``<location>/f/abc/
    output.pkl`` lies in the location ``<location>/f/abc``). Take ``StoreBackendMixin``
    too for the methods ``Memory`` calls. A class that defines the seven methods without
    deriving from this one (such as a subclass of joblib's ``StoreBackendBase``) counts as
    a subclass."""

    #: The store's root location, set by ``configure``.
    location: Any = None

    @abstractmethod
    def _open_item(self, f: str, mode: str) -> Any:
        """A binary file object for the item named ``f``, opened in ``mode`` (``"rb"`` or
        ``"wb"``), usable as a context manager."""

    @abstractmethod
    def _item_exists(self, location: str) -> bool:
        """Whether an item or location is in the store."""

    @abstractmethod
    def _move_item(self, src: str, dst: str) -> None:
        """Renames the item ``src`` to ``dst``, replacing ``dst`` if it is there."""

    @abstractmethod
    def create_location(self, location: str) -> None:
        """Creates a location (a directory, on a filesystem), and its parents."""

    @abstractmethod
    def clear_location(self, location: str) -> None:
        """Deletes a location and everything in it."""

    @abstractmethod
    def get_items(self) -> List[CacheItemInfo]:
        """Every cached result in the store, as ``CacheItemInfo(path, size,
        last_access)``."""

    @abstractmethod
    def configure(
        self, location: Any, verbose: int = 0, backend_options: Optional[dict] = None
    ) -> None:
        """Sets the store up at ``location``. ``backend_options``: ``Memory``'s
        ``compress`` and ``mmap_mode``, and the ``backend_options`` it was given."""

    @classmethod
    def __subclasshook__(cls, other: type) -> Any:
        if cls is StoreBackendBase and _has_methods(other, _PRIMITIVES):
            return True
        return NotImplemented


#: A keyword's default in the mixin: the backend's attribute of that name, set by its
#: ``configure`` (``compress``, ``mmap_mode``).
_CONFIGURED: Any = object()


class StoreBackendMixin:
    """The methods ``Memory`` calls, built on ``StoreBackendBase``'s primitives."""

    location: Any
    _open_item: Callable[[str, str], Any]
    _item_exists: Callable[[str], bool]
    _move_item: Callable[[str, str], None]
    create_location: Callable[[str], None]
    clear_location: Callable[[str], None]
    get_items: Callable[[], List[CacheItemInfo]]

    def _path(self, *parts: str) -> str:
        return os.path.join(self.location, *parts)

    # -- results ----------------------------------------------------------------------

    def load_item(
        self,
        call_id: Sequence[str],
        verbose: int = 1,
        timestamp: Optional[float] = None,
        metadata: Optional[dict] = None,
        mmap_mode: Any = _CONFIGURED,
    ) -> Any:
        """The result stored under ``call_id`` (``[function, argument hash]``); KeyError if
        there is none, ValueError if it is damaged. ``mmap_mode``: by default the
        backend's ``mmap_mode`` attribute (None if it has none); arrays are mapped only
        when the item is a file on this machine, else they are read with a warning."""
        path = self._path(*call_id)
        filename = os.path.join(path, _OUTPUT)
        if mmap_mode is _CONFIGURED:
            mmap_mode = getattr(self, "mmap_mode", None)
        if verbose > 1:
            print_loading(_function_name(call_id[0]), path, verbose, timestamp, metadata)
        if not self._item_exists(filename):
            raise KeyError("Non-existing item (may have been cleared): %s" % filename)
        if mmap_mode is not None and os.path.isfile(filename):
            return load(filename, mmap_mode=mmap_mode)
        with self._open_item(filename, "rb") as f:
            return load(f, mmap_mode=mmap_mode)

    def dump_item(
        self,
        call_id: Sequence[str],
        item: Any,
        verbose: int = 1,
        compress: Any = _CONFIGURED,
    ) -> bool:
        """Stores ``item`` under ``call_id``, whole or not at all; True if it was stored.
        A value that cannot be pickled, or a failing store, is a ``CacheWarning`` (the
        caller returns the value uncached). ``compress``: by default the backend's
        ``compress`` attribute (False if it has none)."""
        if compress is _CONFIGURED:
            compress = getattr(self, "compress", False)
        path = self._path(*call_id)
        try:
            if not self._item_exists(path):
                self.create_location(path)
            if verbose > 10:
                print("Persisting in %s" % path)
            self._write(os.path.join(path, _OUTPUT), lambda f: dump(item, f, compress=compress))
        except Exception as e:
            warnings.warn(
                "joblet.Memory: the item %s could not be stored (%s: %s); the result is "
                "returned but not cached" % (path, type(e).__name__, e),
                CacheWarning,
                stacklevel=2,
            )
            return False
        return True

    def clear_item(self, call_id: Sequence[str]) -> None:
        """Deletes the result stored under ``call_id``, if any."""
        path = self._path(*call_id)
        if self._item_exists(path):
            self.clear_location(path)

    def contains_item(self, call_id: Sequence[str]) -> bool:
        """Whether a result is stored under ``call_id``."""
        return bool(self._item_exists(self._path(*call_id, _OUTPUT)))

    def get_item_info(self, call_id: Sequence[str]) -> Dict[str, Any]:
        return {"location": self._path(*call_id)}

    def get_metadata(self, call_id: Sequence[str]) -> dict:
        """The metadata stored with a result (``duration``, ``input_args``, ``time``);
        ``{}`` if there is none or it cannot be read."""
        try:
            with self._open_item(self._path(*call_id, _METADATA), "rb") as f:
                return json.loads(f.read().decode("utf-8"))
        except Exception:
            return {}

    def store_metadata(self, call_id: Sequence[str], metadata: dict) -> None:
        """Stores a result's metadata (a failure is ignored: the result stays usable)."""
        try:
            path = self._path(*call_id)
            if not self._item_exists(path):
                self.create_location(path)
            data = json.dumps(metadata).encode("utf-8")
            self._write(os.path.join(path, _METADATA), lambda f: f.write(data))
        except Exception:
            pass

    # -- functions --------------------------------------------------------------------

    def contains_path(self, call_id: Sequence[str]) -> bool:
        """Whether the location ``call_id`` (a function's, usually) is in the store."""
        return bool(self._item_exists(self._path(*call_id)))

    def clear_path(self, call_id: Sequence[str]) -> None:
        """Deletes a function's results (everything under the location ``call_id``)."""
        path = self._path(*call_id)
        if self._item_exists(path):
            self.clear_location(path)

    def store_cached_func_code(
        self, call_id: Sequence[str], func_code: Optional[str] = None
    ) -> None:
        """Creates the function's location and, given ``func_code``, records it there
        (written whole: a reader never takes half a source for a changed function)."""
        path = self._path(*call_id)
        if not self._item_exists(path):
            self.create_location(path)
        if func_code is not None:
            data = func_code.encode("utf-8")
            self._write(os.path.join(path, _FUNC_CODE), lambda f: f.write(data))

    def get_cached_func_code(self, call_id: Sequence[str]) -> str:
        """The function source recorded with ``store_cached_func_code``; an OSError
        (``FileNotFoundError``) if there is none."""
        filename = self._path(*call_id, _FUNC_CODE)
        if not self._item_exists(filename):
            raise FileNotFoundError("No function code recorded: %s" % filename)
        with self._open_item(filename, "rb") as f:
            return f.read().decode("utf-8")

    def get_cached_func_info(self, call_id: Sequence[str]) -> Dict[str, Any]:
        return {"location": self._path(*call_id)}

    # -- the whole store --------------------------------------------------------------

    def clear(self) -> None:
        """Deletes everything in the store."""
        self.clear_location(self.location)

    def enforce_store_limits(
        self,
        bytes_limit: Any,
        items_limit: Optional[int] = None,
        age_limit: Optional[datetime.timedelta] = None,
    ) -> None:
        """Deletes results, least recently used first, until at most ``bytes_limit``
        bytes (an int, or a str such as ``'10M'``) and ``items_limit`` results are left,
        and every result not used within ``age_limit``."""
        for item in self._get_items_to_delete(bytes_limit, items_limit, age_limit):
            if getattr(self, "verbose", 0) > 10:
                print("Deleting item %s" % (item,))
            try:
                self.clear_location(item.path)
            except OSError:
                pass  # another process deleted it first

    def _get_items_to_delete(
        self,
        bytes_limit: Any,
        items_limit: Optional[int] = None,
        age_limit: Optional[datetime.timedelta] = None,
    ) -> List[CacheItemInfo]:
        """The items ``enforce_store_limits`` deletes, least recently used first."""
        if isinstance(bytes_limit, str):
            bytes_limit = parse_size(bytes_limit)
        deadline: Optional[datetime.datetime] = None
        if age_limit is not None:
            if age_limit.total_seconds() < 0:
                raise ValueError("age_limit has to be a positive timedelta")
            deadline = datetime.datetime.now() - age_limit
        items = sorted(self.get_items(), key=lambda item: item.last_access)
        excess_bytes = 0 if bytes_limit is None else sum(i.size for i in items) - bytes_limit
        excess_items = 0 if items_limit is None else len(items) - items_limit
        doomed: List[CacheItemInfo] = []
        for item in items:
            too_old = deadline is not None and item.last_access < deadline
            if excess_bytes <= 0 and excess_items <= 0 and not too_old:
                break  # the rest are more recent
            doomed.append(item)
            excess_bytes -= item.size
            excess_items -= 1
        return doomed

    def _write(self, filename: str, write: Callable[[Any], Any]) -> None:
        """Writes an item under a temporary name beside ``filename``, then moves it into
        place: with a ``_move_item`` that replaces atomically, readers and concurrent
        writers see one whole item or the old one. The temporary item is deleted if the
        write fails."""
        temporary = "%s.%s.tmp" % (filename, uuid.uuid4().hex)
        try:
            with self._open_item(temporary, "wb") as f:
                write(f)
            self._move_item(temporary, filename)
        except BaseException:
            try:
                if self._item_exists(temporary):
                    self.clear_location(temporary)
            except Exception:
                pass
            raise

    def __repr__(self) -> str:
        return '%s(location="%s")' % (type(self).__name__, self.location)


def format_time(t: float) -> str:
    return "%.1fs, %.1fmin" % (t, t / 60.0)


def print_loading(
    name: str, location: str, verbose: int, timestamp: Optional[float], metadata: Optional[dict]
) -> None:
    """joblib's verbose line for a cached result being read (``verbose`` > 1): the time
    since the ``Memory`` was made, the call, and from 10 on where it is read from."""
    stamp = "" if timestamp is None else "{: <16}".format(format_time(time.time() - timestamp))
    signature = name
    if metadata is not None and "input_args" in metadata:
        signature += "(%s)" % ", ".join("%s=%s" % kv for kv in metadata["input_args"].items())
    msg = "[Memory]%s: Loading %s" % (stamp, signature)
    print(msg + "..." if verbose < 10 else "%s from %s" % (msg, location))


def _function_name(func_id: str) -> str:
    """The function's name in a ``Memory`` function id (``module.qualname-<digest>``)."""
    name = re.sub(r"-[0-9a-f]{16}$", "", os.path.basename(func_id))
    return name.rpartition(".")[2] or name


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    try:
        return int(units[text[-1]] * float(text[:-1]))
    except (KeyError, ValueError, IndexError):
        raise ValueError(
            "Invalid literal for size given: %r; expected something like '10G', '500M', "
            "'50K'" % (text,)
        ) from None


# -- the registry -------------------------------------------------------------------------

#: Backend classes by name. ``"local"`` is absent: it names the engine's store, unless a
#: user registers a class under that name.
_STORE_BACKENDS: Dict[str, type] = {}


def register_store_backend(backend_name: str, backend: type) -> None:
    """Makes ``Memory(location, backend=backend_name)`` store through ``backend``, a
    ``StoreBackendBase`` subclass (joblib's, or any class with its seven methods, count
    too). Registering ``"local"`` replaces the engine's store for that name."""
    if not isinstance(backend_name, str):
        raise ValueError(
            "Store backend name should be a string, not %r (of type %s)"
            % (backend_name, type(backend_name).__name__)
        )
    if not (isinstance(backend, type) and issubclass(backend, StoreBackendBase)):
        raise ValueError(
            "Store backend should inherit StoreBackendBase (or define its methods %s), "
            "not %r" % (", ".join(_PRIMITIVES), backend)
        )
    _STORE_BACKENDS[backend_name] = backend


def _registered(name: Any) -> Optional[type]:
    """The class registered under ``name``, with joblet or, when joblib is imported, with
    joblib (its ``"local"`` is joblib's own directory layout: joblet keeps its store)."""
    if not isinstance(name, str):
        return None
    cls = _STORE_BACKENDS.get(name)
    if cls is None and name != "local":
        registry = getattr(sys.modules.get("joblib.memory"), "_STORE_BACKENDS", None)
        if isinstance(registry, dict):
            cls = registry.get(name)
    return cls


def store_backend_for(
    location: Any, backend: Any, verbose: int, backend_options: Dict[str, Any]
) -> Optional[Any]:
    """The user store backend a ``Memory`` (or ``MemorizedFunc``, ``MemorizedResult``)
    works on: ``location`` itself if it is a store backend; else a new instance of the
    class registered as ``backend``, configured with ``location``; None for the engine's
    store (``"local"``). An unknown name is a TypeError that lists the known ones."""
    if isinstance(location, StoreBackendBase):
        return location
    cls = _registered(backend)
    if cls is None:
        if backend == "local":
            return None
        known = sorted(set(_STORE_BACKENDS) | {"local"})
        raise TypeError(
            "Unknown location %r or backend %r: no store backend is registered under "
            "that name (known: %s; joblet.register_store_backend adds one)"
            % (location, backend, ", ".join(known))
        )
    if isinstance(location, (str, os.PathLike)):
        location = os.path.expanduser(os.fspath(location))
    store = cls()
    store.configure(location, verbose=verbose, backend_options=dict(backend_options))
    return store


#: The keywords joblet's mixin adds to joblib's ``load_item``/``dump_item``.
_EXTRA_KEYWORDS = ("compress", "mmap_mode")


def accepted_keywords(method: Any) -> frozenset:
    """Which of ``compress`` and ``mmap_mode`` a backend's method names as parameters
    (joblet's mixin does; joblib's, and backends written for it, do not; a bare
    ``**kwargs`` does not count: it may forward to joblib's). Read once per function."""
    func = getattr(method, "__func__", method)
    try:
        return _accepted[func]
    except (KeyError, TypeError):
        pass
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        out: frozenset = frozenset()
    else:
        keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        out = frozenset(n for n in _EXTRA_KEYWORDS if n in params and params[n].kind in keyword)
    try:
        _accepted[func] = out
    except TypeError:
        pass
    return out


_accepted: "weakref.WeakKeyDictionary[Any, frozenset]" = weakref.WeakKeyDictionary()
