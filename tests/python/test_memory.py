"""joblet.Memory against joblib 1.6's documented behaviour, and the store's guarantees
(atomic entries, private files, one entry from concurrent writers)."""

import datetime
import importlib
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import joblet
from joblet import Memory, MemorizedResult, expires_after


def _entries(memory):
    return memory.store_backend.entries()


def _output_paths(memory):
    return [os.path.join(e[2], "output.pkl") for e in _entries(memory)]


def _all_paths(root):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            yield os.path.join(dirpath, name)


def square(x):
    return x * x


def test_exports_match_joblib():
    import joblib

    for name in ("Memory", "MemorizedResult", "expires_after"):
        assert name in joblib.__all__
        assert name in joblet.__all__


def test_hit_and_miss(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls = []

    @memory.cache
    def f(x):
        calls.append(x)
        return x + 1

    assert f(1) == 2
    assert f(1) == 2
    assert f(2) == 3
    assert calls == [1, 2]
    assert len(_entries(memory)) == 2


def test_defaults_are_bound(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls = []

    @memory.cache
    def f(x, y=2, *args, z=3, **kwargs):
        calls.append((x, y))
        return x + y + z

    assert f(1) == 6
    assert f(1, y=2) == 6
    assert f(1, 2) == 6
    assert f(x=1, z=3) == 6
    assert calls == [(1, 2)]
    assert f(1, 3) == 7
    assert f(1, 2, 5) == 6  # an extra positional argument is another call
    assert f(1, w=0) == 6  # so is an extra keyword
    assert len(calls) == 4
    with pytest.raises(ValueError):
        f(1, 2, x=3)


def test_ignore(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls = []

    @memory.cache(ignore=["debug"])
    def f(x, debug=False):
        calls.append(x)
        return x

    assert f(1) == 1
    assert f(1, debug=True) == 1
    assert calls == [1]

    @memory.cache(ignore=["nope"])
    def g(x):
        return x

    with pytest.raises(ValueError, match="nope"):
        g(1)


def test_source_change_invalidates(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "memory_source_change_mod.py"
    module.write_text("def f(x):\n    return x * 2\n")
    importlib.invalidate_caches()
    mod = importlib.import_module("memory_source_change_mod")
    try:
        memory = Memory(tmp_path / "cache", verbose=0)
        assert memory.cache(mod.f)(5) == 10
        assert memory.cache(mod.f)(5) == 10
        assert len(_entries(memory)) == 1
        module.write_text("def f(x):\n    # changed\n    return x * 3\n")
        importlib.invalidate_caches()
        mod = importlib.reload(mod)
        cached = memory.cache(mod.f)
        assert cached.check_call_in_cache(5) is False
        assert cached(5) == 15
        assert len(_entries(memory)) == 1
    finally:
        sys.modules.pop("memory_source_change_mod", None)


def test_location_none_is_transparent():
    memory = Memory(None)
    calls = []

    def f(x):
        calls.append(x)
        return x

    cached = memory.cache(f)
    assert cached(1) == 1 and cached(1) == 1
    assert calls == [1, 1]
    assert cached.call(2) == (2, {})
    assert cached.call_and_shelve(3).get() == 3
    assert cached.check_call_in_cache(1) is False
    cached.clear()
    memory.clear(warn=False)
    memory.reduce_size(items_limit=0)


def test_call_forces_and_returns_metadata(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls = []

    @memory.cache
    def f(x):
        calls.append(x)
        return -x

    out, metadata = f.call(4)
    assert out == -4
    assert metadata["input_args"] == {"x": "4"}
    assert metadata["duration"] >= 0 and "time" in metadata
    f.call(4)
    assert calls == [4, 4]
    assert f(4) == -4
    assert calls == [4, 4]


def test_call_and_shelve(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls = []

    @memory.cache
    def f(x):
        calls.append(x)
        return [x] * 3

    result = f.call_and_shelve(2)
    assert isinstance(result, MemorizedResult)
    assert result.get() == [2, 2, 2]
    again = pickle.loads(pickle.dumps(result))
    assert again.get() == [2, 2, 2]
    assert f.call_and_shelve(2).get() == [2, 2, 2]
    assert calls == [2]
    result.clear()
    with pytest.raises(KeyError):
        result.get()
    assert f.check_call_in_cache(2) is False


def test_check_call_in_cache_and_clear(tmp_path):
    memory = Memory(tmp_path, verbose=0)

    @memory.cache
    def f(x):
        return x

    @memory.cache
    def g(x):
        return x

    assert f.check_call_in_cache(1) is False
    f(1)
    g(1)
    assert f.check_call_in_cache(1) is True
    assert f.check_call_in_cache(2) is False
    f.clear(warn=False)
    assert f.check_call_in_cache(1) is False
    assert g.check_call_in_cache(1) is True
    memory.clear(warn=False)
    assert g.check_call_in_cache(1) is False
    assert _entries(memory) == []


def test_memorized_func_pickles(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    cached = memory.cache(square)
    assert cached(3) == 9
    again = pickle.loads(pickle.dumps(cached))
    assert again.check_call_in_cache(3) is True
    assert again(3) == 9


def _set_access(memory, times):
    """Sets each entry's last access (the store's documented ``access`` file)."""
    for entry, t in zip(sorted(_entries(memory), key=lambda e: e[2]), times):
        os.utime(os.path.join(entry[2], "access"), (t, t))


def _three_entries(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    f = memory.cache(lambda n: np.zeros(n))
    for n in (1000, 1001, 1002):
        f(n)
    entries = sorted(_entries(memory), key=lambda e: e[2])
    now = datetime.datetime.now().timestamp()
    _set_access(memory, [now - 300, now - 200, now - 100])
    return memory, [e[2] for e in entries], [e[3] for e in entries]


def test_reduce_size_items(tmp_path):
    memory, paths, _ = _three_entries(tmp_path)
    memory.reduce_size(items_limit=2)
    assert sorted(e[2] for e in _entries(memory)) == paths[1:]
    memory.reduce_size(items_limit=0)
    assert _entries(memory) == []


def test_reduce_size_bytes(tmp_path):
    memory, paths, sizes = _three_entries(tmp_path)
    assert min(sizes) > 8000
    memory.reduce_size(bytes_limit=sizes[2] + sizes[1] + 10)
    assert sorted(e[2] for e in _entries(memory)) == paths[1:]
    memory.reduce_size(bytes_limit="1K")
    assert _entries(memory) == []
    with pytest.raises(ValueError):
        memory.reduce_size(bytes_limit="lots")


def test_reduce_size_age(tmp_path):
    memory, paths, _ = _three_entries(tmp_path)
    memory.reduce_size(age_limit=datetime.timedelta(seconds=150))
    assert [e[2] for e in _entries(memory)] == paths[2:]
    with pytest.raises(ValueError):
        memory.reduce_size(age_limit=datetime.timedelta(seconds=-1))


def test_a_hit_is_a_recent_access(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    f = memory.cache(lambda n: n)
    store = memory.store_backend
    paths = {}
    for n in range(3):
        f(n)
        paths[n] = store.entry_path(f.func_id, f._get_args_id(n))
        os.utime(os.path.join(paths[n], "access"), (1000 * (n + 1),) * 2)
    assert f(0) == 0  # a hit on the oldest makes it the most recent
    memory.reduce_size(items_limit=1)
    assert [e[2] for e in _entries(memory)] == [paths[0]]


def test_expires_after(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls = []

    def f(x):
        calls.append(x)
        return x

    long_lived = memory.cache(f, cache_validation_callback=expires_after(seconds=1000))
    long_lived(1)
    long_lived(1)
    assert calls == [1]
    short_lived = memory.cache(f, cache_validation_callback=expires_after(microseconds=1))
    short_lived(1)
    assert calls == [1, 1]
    with pytest.raises(ValueError):
        memory.cache(f, cache_validation_callback=3)


def test_mmap_mode_returns_memmap(tmp_path):
    memory = Memory(tmp_path, mmap_mode="r", verbose=0)

    @memory.cache
    def f(n):
        return np.arange(n, dtype=np.float64)

    first = f(1000)
    second = f(1000)
    assert isinstance(first, np.memmap) and isinstance(second, np.memmap)
    np.testing.assert_array_equal(second, np.arange(1000.0))
    assert Memory(tmp_path, verbose=0).cache(f.func)(1000).__class__ is np.ndarray


def test_damaged_output_is_recomputed_with_a_warning(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    calls = []

    @memory.cache
    def f(n):
        calls.append(n)
        return np.arange(n, dtype=np.float64)

    f(10000)
    (path,) = _output_paths(memory)
    with open(path, "r+b") as out:
        out.seek(os.path.getsize(path) // 2)
        byte = out.read(1)
        out.seek(-1, os.SEEK_CUR)
        out.write(bytes([byte[0] ^ 0xFF]))
    with pytest.warns(UserWarning, match="could not load"):
        again = f(10000)
    np.testing.assert_array_equal(again, np.arange(10000.0))
    assert calls == [10000, 10000]
    # The entry was replaced by a good one.
    np.testing.assert_array_equal(joblet.load(_output_paths(memory)[0]), np.arange(10000.0))
    f(10000)
    assert len(calls) == 2


def test_unpicklable_output_is_returned_and_not_stored(tmp_path):
    memory = Memory(tmp_path, verbose=0)

    @memory.cache
    def f(x):
        return threading.Lock()

    with pytest.warns(UserWarning, match="cannot be stored"):
        lock = f(1)
    assert hasattr(lock, "acquire")
    assert _entries(memory) == []
    assert not [p for p in _all_paths(memory.store_backend.location) if ".tmp-" in p]
    with pytest.warns(UserWarning):
        assert f.call_and_shelve(1).get() is not None


def test_store_is_private(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    memory.cache(square)(7)
    root = memory.store_backend.location
    paths = [str(root)] + list(_all_paths(root))
    assert any(p.endswith("output.pkl") for p in paths)
    assert any(p.endswith("metadata.json") for p in paths)
    for p in paths:
        mode = stat.S_IMODE(os.stat(p).st_mode)
        expected = 0o700 if os.path.isdir(p) else 0o600
        assert mode == expected, (p, oct(mode))


def test_verbose_messages(tmp_path, capsys):
    memory = Memory(tmp_path, verbose=1)
    f = memory.cache(square)
    f(3)
    out = capsys.readouterr().out
    assert "[Memory] Calling" in out and "square(3)" in out
    assert "_" * 20 in out
    f(3)
    assert capsys.readouterr().out == ""


_CONCURRENT = textwrap.dedent(
    """
    import os, sys, time
    import joblet

    cache, flags, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    memory = joblet.Memory(cache, verbose=0)

    def compute(x):
        # Every process is computing before any stores: all four commit the same entry.
        open(os.path.join(flags, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 60
        while len(os.listdir(flags)) < n:
            if time.monotonic() > deadline:
                raise SystemExit("the other processes never started")
            time.sleep(0.001)
        return [x] * 1000

    print(memory.cache(compute)(7) == [7] * 1000)
    """
)


def test_concurrent_processes_leave_one_entry(tmp_path):
    script = tmp_path / "concurrent_memory.py"
    script.write_text(_CONCURRENT)
    flags = tmp_path / "flags"
    flags.mkdir()
    cache = tmp_path / "cache"
    n = 4
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(cache), str(flags), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outs = [p.communicate(timeout=100) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "True", (out, err)
    assert len(os.listdir(flags)) == n  # all four computed
    memory = Memory(cache, verbose=0)
    (path,) = _output_paths(memory)
    assert joblet.load(path) == [7] * 1000
    assert not [p for p in _all_paths(cache) if ".tmp-" in p]


def test_coroutine_functions(tmp_path):
    import asyncio

    calls = []

    async def f(x):
        calls.append(x)
        return x * 10

    cached = Memory(tmp_path, verbose=0).cache(f)
    assert asyncio.run(cached(2)) == 20
    assert asyncio.run(cached(2)) == 20
    assert calls == [2]
    out, metadata = asyncio.run(cached.call(2))
    assert out == 20 and metadata["input_args"] == {"x": "2"}
    assert asyncio.run(cached.call_and_shelve(2)).get() == 20
    assert calls == [2, 2]
    plain = Memory(None).cache(f)
    assert asyncio.run(plain(3)) == 30
    assert asyncio.run(plain.call_and_shelve(3)).get() == 30


class _FailingCommit:
    """A store whose commit fails (a full disk, a concurrent clear)."""

    def __init__(self, store):
        self._store = store

    def commit(self, *args):
        raise OSError("no space left on device (simulated)")

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_a_failed_commit_returns_the_output_and_leaves_nothing(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    cached = memory.cache(square)
    cached._store_obj = _FailingCommit(memory.store_backend)
    with pytest.warns(UserWarning, match="simulated"):
        assert cached(5) == 25
    assert _entries(memory) == []
    assert not [p for p in _all_paths(memory.store_backend.location) if ".tmp-" in p]


def test_cached_function_in_worker_processes(tmp_path):
    memory = Memory(tmp_path, verbose=0)
    cached = memory.cache(square)
    out = joblet.Parallel(n_jobs=2, backend="loky")(joblet.delayed(cached)(i) for i in range(6))
    assert out == [i * i for i in range(6)]
    assert all(cached.check_call_in_cache(i) for i in range(6))
    assert len(_entries(memory)) == 6


def test_wrong_arguments_are_value_errors_in_joblibs_words(tmp_path):
    def f(a, b, *, kw=1):
        return a

    cached = Memory(tmp_path, verbose=0).cache(f)
    with pytest.raises(ValueError, match="Too many arguments for"):
        cached(1, 2, 3)
    with pytest.raises(ValueError, match="Too many keyword arguments for"):
        cached(1, 2, other=3)
    with pytest.raises(ValueError, match="Wrong number of arguments for"):
        cached(1)


def _sum(a, b):
    return a + b


def _product(a, b):
    return a * b


def test_replaced_code_is_a_change_with_a_collision_warning(tmp_path):
    def f(a, b):
        pass

    f.__code__ = _sum.__code__
    cached = Memory(tmp_path, verbose=0).cache(f)
    assert cached(2, 3) == 5
    f.__code__ = _product.__code__
    with pytest.warns(joblet._memory.JobLibCollisionWarning, match="collision"):
        assert cached(2, 3) == 6
    assert cached(2, 3) == 6
    assert len(_entries(Memory(tmp_path, verbose=0))) == 1


def test_same_name_functions_warn_of_a_collision(tmp_path):
    memory = Memory(tmp_path, verbose=0)

    @memory.cache
    def twin(x):
        return x

    first = twin

    @memory.cache
    def twin(x):  # noqa: F811
        return -x

    with pytest.warns(joblet._memory.JobLibCollisionWarning, match="collision"):
        assert first(1) == 1
        assert twin(1) == -1
    # Each checked its source once; the code is in the key, so neither reads the other's.
    for _ in range(2):
        assert first(1) == 1
        assert twin(1) == -1


def test_location_gets_a_gitignore(tmp_path):
    Memory(tmp_path / "cache", verbose=0).cache(square)(2)
    assert (tmp_path / "cache" / ".gitignore").read_text().endswith("*\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / ".gitignore").write_text("keep\n")
    Memory(tmp_path / "mine", verbose=0)
    assert (tmp_path / "mine" / ".gitignore").read_text() == "keep\n"


def test_call_replaces_the_stored_result(tmp_path):
    # Found by review: .call() recomputed but the next hit returned the older result.
    counter = {"n": 0}

    def g(x):
        counter["n"] += 1
        return counter["n"]

    mem = joblet.Memory(tmp_path, verbose=0)
    cached = mem.cache(g)
    assert cached(1) == 1
    output, _ = cached.call(1)
    assert output == 2
    assert cached(1) == 2, "the hit returns what .call() stored"
