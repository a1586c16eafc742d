"""Run joblib 1.6.0's own ``Parallel`` / ``parallel_config`` tests against joblet.

What it does
------------
1. Copies ``joblib/test/test_parallel.py``, ``joblib/test/test_config.py`` and (when
   ``distributed`` is installed) ``joblib/test/test_dask.py`` from the installed joblib
   (must be 1.6.0) into a fresh temporary directory.
2. Rewrites their imports so that the names under test come from joblet:

   * ``Parallel``, ``delayed``, ``parallel_config``, ``parallel_backend``,
     ``effective_n_jobs``, ``cpu_count``, ``register_parallel_backend`` -> ``joblet``;
   * the backend registry and classes (``BACKENDS``, ``DEFAULT_BACKEND``, ``LokyBackend``,
     ``MultiprocessingBackend``, ``ParallelBackendBase``, ``SequentialBackend``,
     ``ThreadingBackend``) -> ``joblet._backends`` (joblet's equivalents; a test that
     checks ``isinstance(p._backend, LokyBackend)`` thus checks joblet's own class);
   * the ``joblib.parallel`` module object the tests call ``parallel`` (used only for
     ``parallel.get_active_backend()`` and ``parallel.DEFAULT_BACKEND``) -> a small shim
     that reads/writes ``joblet._config.get_active_backend`` / ``joblet._backends.DEFAULT_BACKEND``;
   * loky's ``TerminatedWorkerError`` -> ``joblet.TerminatedWorkerError``;
   * the scripts the tests run in subprocesses: ``from joblib import Parallel, delayed``
     -> ``from joblet import ...``.

   Everything else keeps pointing at joblib, because joblet has no equivalent: the test
   helpers (``joblib.testing``, ``joblib.test.common``), ``joblib.dump/load/hash``,
   ``joblib.parallel.mp``, and
   ``joblib.externals.loky.get_reusable_executor``. ``test_config.py``'s
   ``from joblib.test.test_parallel import check_memmap`` is pointed at the rewritten copy.
   Every rewrite is an exact text replacement with an expected count; if joblib's file does
   not match, the script says so and stops (it is written against joblib 1.6.0).
3. Adds a ``conftest.py`` that, after each test, puts joblet's ``parallel_config`` state and
   default backend back (a test that fails half-way can leave a ``parallel_config`` active,
   which in joblib as in joblet would change the backend of every later test; the summary
   lists the tests that did), and a ``pytest.ini`` that registers joblib's markers.
4. Runs pytest on the rewritten files (``--timeout`` per test, ``-p no:cacheprovider``,
   ``--junitxml``) in its own process group, the whole run bounded by ``--total-timeout``.
5. Reads the JUnit XML and prints a summary: counts of passed / failed / errored / skipped /
   xfailed (pytest's own line too, which counts xpassed apart), then every failure and
   error with a one-line reason (exception type and first line of its message), grouped by
   cause. The causes (``CAUSES``) were written from reading each failing test, in three
   kinds: "tests joblib internals" (private attributes, loky, memmapping, hooks
   overridden on subclasses of the built-in backends: says nothing about joblet's public
   behaviour), "nested-call bookkeeping differs (semi-public)", and "public behaviour
   differs". A failure that no cause matches is listed as "other (unclassified)": new
   failures land there.
   Fatal errors or Rust panics that the pytest process printed at exit are reported too.

It is a measurement, not a gate: it always exits 0 (unless it could not set up the run).
It takes about 3 minutes on 2 cores.

Usage (from the repository root)::

    .venv/bin/python tests/joblib_compat/run.py [--timeout 60] [--total-timeout 900]
        [-k EXPR] [--keep] [--xml PATH] [--verbose-failures] [--baseline] [--no-isolation]
        [-- EXTRA_PYTEST_ARGS]

``-k`` is passed to pytest (e.g. to leave out slow tests); ``--keep`` keeps the temporary
directory (rewritten tests, ``pytest.log`` and the JUnit XML) and prints its path;
``--baseline`` runs the unmodified tests against joblib itself (all pass here: 718 passed,
35 skipped); ``--no-isolation`` leaves out the ``conftest.py`` of step 3.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ET

EXPECTED_JOBLIB = "1.6.0"

# --- rewrites --------------------------------------------------------------------------------
# (old, new, expected number of occurrences)

PARALLEL_REWRITES: list[tuple[str, str, int]] = [
    (
        "from joblib import dump, load, parallel\n",
        "from joblib import dump, load\n"
        "from _joblet_compat_shim import parallel  # joblet: get_active_backend/DEFAULT_BACKEND\n",
        1,
    ),
    (
        "from joblib._parallel_backends import (\n"
        "    LokyBackend,\n"
        "    MultiprocessingBackend,\n"
        "    ParallelBackendBase,\n"
        "    SequentialBackend,\n"
        "    ThreadingBackend,\n"
        ")\n",
        "from joblet._backends import (  # joblet\n"
        "    LokyBackend,\n"
        "    MultiprocessingBackend,\n"
        "    ParallelBackendBase,\n"
        "    SequentialBackend,\n"
        "    ThreadingBackend,\n"
        ")\n",
        1,
    ),
    (
        "from joblib.parallel import (\n"
        "    BACKENDS,\n"
        "    Parallel,\n"
        "    cpu_count,\n"
        "    delayed,\n"
        "    effective_n_jobs,\n"
        "    mp,\n"
        "    parallel_backend,\n"
        "    parallel_config,\n"
        "    register_parallel_backend,\n"
        ")\n",
        "from joblib.parallel import mp\n"
        "from joblet import (  # joblet\n"
        "    Parallel,\n"
        "    cpu_count,\n"
        "    delayed,\n"
        "    effective_n_jobs,\n"
        "    parallel_backend,\n"
        "    parallel_config,\n"
        "    register_parallel_backend,\n"
        ")\n"
        "from joblet._backends import BACKENDS  # joblet\n",
        1,
    ),
    (
        "class MyBackend(joblib._parallel_backends.LokyBackend):",
        "class MyBackend(LokyBackend):  # joblet's LokyBackend",
        1,
    ),
    (
        "from joblib.externals.loky.process_executor import TerminatedWorkerError  # noqa",
        "from joblet import TerminatedWorkerError  # noqa  (joblet)",
        1,
    ),
    # scripts run in a subprocess
    ("\nfrom joblib import Parallel, delayed\n", "\nfrom joblet import Parallel, delayed\n", 3),
    (
        "\nfrom joblib import Parallel, delayed, hash\n",
        "\nfrom joblet import Parallel, delayed\nfrom joblib import hash\n",
        1,
    ),
]

CONFIG_REWRITES: list[tuple[str, str, int]] = [
    (
        "from joblib._parallel_backends import (\n"
        "    LokyBackend,\n"
        "    MultiprocessingBackend,\n"
        "    ThreadingBackend,\n"
        ")\n",
        "from joblet._backends import (  # joblet\n"
        "    LokyBackend,\n"
        "    MultiprocessingBackend,\n"
        "    ThreadingBackend,\n"
        ")\n",
        1,
    ),
    (
        "from joblib.parallel import (\n"
        "    BACKENDS,\n"
        "    DEFAULT_BACKEND,\n"
        "    EXTERNAL_BACKENDS,\n"
        "    Parallel,\n"
        "    delayed,\n"
        "    parallel_backend,\n"
        "    parallel_config,\n"
        ")\n",
        "from joblet import Parallel, delayed, parallel_backend, parallel_config  # joblet\n"
        "from joblet._backends import BACKENDS, DEFAULT_BACKEND, EXTERNAL_BACKENDS  # joblet\n",
        1,
    ),
    (
        "from joblib.test.test_parallel import check_memmap\n",
        "from test_parallel import check_memmap  # the rewritten copy\n",
        1,
    ),
]

DASK_REWRITES: list[tuple[str, str, int]] = [
    (
        "from .. import Parallel, delayed, parallel_backend, parallel_config\n",
        "from joblet import Parallel, delayed, parallel_backend, parallel_config  # joblet\n",
        1,
    ),
    (
        "from .._dask import DaskDistributedBackend\n",
        "from joblet._dask import DaskDistributedBackend  # joblet\n",
        1,
    ),
    (
        "from ..parallel import AutoBatchingMixin, ThreadingBackend\n",
        "from joblet._backends import AutoBatchingMixin, ThreadingBackend  # joblet\n",
        1,
    ),
    ("from .common import np, with_numpy\n", "from joblib.test.common import np, with_numpy\n", 1),
    ("from .test_parallel import (", "from test_parallel import (  # the rewritten copy", 1),
    (
        "    from joblib._parallel_backends import ParallelBackendBase\n",
        "    from joblet._backends import ParallelBackendBase  # joblet\n",
        1,
    ),
    (
        # joblib's own conftest provides these fixtures of distributed's.
        "from distributed.utils_test import cleanup, cluster, inc  # noqa: E402, F401\n",
        "from distributed.utils_test import cleanup, cluster, inc  # noqa: E402, F401\n"
        "from distributed.utils_test import loop, loop_in_thread  # noqa: E402, F401\n",
        1,
    ),
]

SHIM = '''\
"""Stands for the ``joblib.parallel`` module object in the rewritten tests."""
import joblet._backends as _backends
import joblet._config as _config


class _ParallelModule:
    get_active_backend = staticmethod(_config.get_active_backend)

    @property
    def DEFAULT_BACKEND(self):
        return _backends.DEFAULT_BACKEND

    @DEFAULT_BACKEND.setter
    def DEFAULT_BACKEND(self, value):
        _backends.DEFAULT_BACKEND = value


parallel = _ParallelModule()
'''

CONFTEST = '''\
"""Isolation between tests (run.py): a test that fails half-way may leave a
``parallel_config``/``parallel_backend`` registered (joblib's tests create some without a
``with`` block, and some call ``register_parallel_backend(..., make_default=True)``); in joblib
as in joblet that would change the active backend of every later test. After each test this
puts joblet's context and default backend back, and notes the tests that left them changed.
"""
import os

import pytest

import joblet._backends as _backends
import joblet._config as _config

_DEFAULT = _backends.DEFAULT_BACKEND


@pytest.fixture(autouse=True)
def _joblet_isolation(request):
    yield
    leaked = []
    if getattr(_config._local, "config", _config.DEFAULTS) is not _config.DEFAULTS:
        leaked.append("parallel_config left active")
        _config._local.config = _config.DEFAULTS
    if _backends.DEFAULT_BACKEND != _DEFAULT:
        leaked.append(f"DEFAULT_BACKEND left as {_backends.DEFAULT_BACKEND!r}")
        _backends.DEFAULT_BACKEND = _DEFAULT
    if leaked and os.environ.get("JOBLET_COMPAT_LEAKS"):
        with open(os.environ["JOBLET_COMPAT_LEAKS"], "a") as fh:
            fh.write(f"{request.node.nodeid}: {'; '.join(leaked)}\\n")
'''

PYTEST_INI = """\
[pytest]
markers =
    thread_unsafe: joblib marker (pytest-run-parallel)
    parallel_threads: joblib marker (pytest-run-parallel)
    iterations: joblib marker (pytest-run-parallel)
    no_cover: joblib marker
"""


def rewrite(text: str, rewrites: list[tuple[str, str, int]], name: str) -> str:
    for old, new, count in rewrites:
        found = text.count(old)
        if found != count:
            sys.exit(
                f"run.py: {name}: expected {count} occurrence(s) of {old.strip()[:70]!r}, "
                f"found {found}; is this joblib {EXPECTED_JOBLIB}?"
            )
        text = text.replace(old, new)
    leftover = re.findall(r"^\s*from joblib(?:\.parallel)? import .*(?:Parallel|parallel_config).*$", text, re.M)
    if leftover:
        sys.exit(f"run.py: {name}: imports of the API under test left on joblib: {leftover}")
    return text


# --- grouping of failures --------------------------------------------------------------------
# Each cause: (group, test-name regex, message regex); a failure goes to the first cause whose
# regexes both match (None matches anything). The message is the failure's first line
# (exception type and message). Written from reading each failing joblib 1.6.0 test: a group
# under INTERNALS means the test fails on joblib machinery that joblet replaces (private
# attributes, loky, memmapping, hooks of the built-in backends) and says nothing about
# joblet's public behaviour; a group under BEHAVIOUR is a difference a joblib user can observe.
INTERNALS = "tests joblib internals"
BEHAVIOUR = "public behaviour differs"
SEMI = "nested-call bookkeeping differs (semi-public)"
CAUSES: list[tuple[str, str | None, str | None]] = [
    (
        INTERNALS + ": private Parallel/backend attributes and methods",
        None,
        r"has no attribute '(_\w+|compute_batch_size|configure|apply_async)'",
    ),
    (INTERNALS + ": worker pool object (backend._pool/_workers)", r"^test_error_capture\b", None),
    (
        INTERNALS + ": verbose messages captured by overriding the private Parallel._print",
        r"^test_parallel_pretty_print\b",
        r"^assert 0 == 1",
    ),
    (
        INTERNALS + ": auto-memmapping of arrays (np.memmap in workers, temp_folder files)",
        None,
        r"Expected np\.memmap instance|temporary directory of Parallel",
    ),
    (
        # Custom backends (engine None) have their hooks called; these two tests subclass
        # joblet's ThreadingBackend, which runs on the engine: their overridden configure /
        # retrieval_context are never called.
        INTERNALS + ": hooks overridden on a subclass of a built-in backend (runs on the engine)",
        r"^(test_retrieval_context|test_zero_worker_backend)\b",
        None,
    ),
    (INTERNALS + ": loky process names in multiprocessing's log", None, r"LokyProcess"),
    (
        SEMI + ": no nested backend set as the active config inside a task "
        "(get_active_backend/Parallel()._backend/nesting_level in a task)",
        r"^(test_nested_backend_context_manager|test_backend_nesting_level|"
        r"test_nested_parallelism_limit)\b",
        None,
    ),
    (
        BEHAVIOUR + ": a multiprocessing context (mp.get_context('spawn')) is not accepted as backend",
        None,
        r"Invalid backend: <multiprocessing\.context",
    ),
    (
        BEHAVIOUR + ": calling a Parallel instance again while its generator runs does not raise "
        "RuntimeError('This Parallel instance is already running')",
        r"^test_multiple_generator_call(_managed)?\[",
        None,
    ),
    (
        BEHAVIOUR + ": return_as='generator' result is not a Python generator (no weakref)",
        None,
        r"cannot create weak reference",
    ),
    (
        BEHAVIOUR + ": no UserWarning when timeout is given to a backend that ignores it (n_jobs=1)",
        r"^test_warning_about_timeout_not_supported_by_backend\b",
        None,
    ),
    (
        BEHAVIOUR + ": no 'Multiprocessing-backed parallel loops cannot be nested' UserWarning",
        r"^test_nested_parallel_warnings\b",
        None,
    ),
    (
        BEHAVIOUR + ": generator_unordered on threads does not yield the fast tasks first "
        "(auto batching groups tasks on threads)",
        r"^test_parallel_unordered_generator_returns_fastest_first\b",
        None,
    ),
    (
        BEHAVIOUR + ": inner_max_num_threads / BLAS thread-limit variables",
        r"^test_threadpool_limitation_in_child_(override|context_error)\b",
        None,
    ),
    (
        BEHAVIOUR + ": multiprocessing.Manager proxies as task arguments fail in worker processes",
        None,
        r"AuthenticationError",
    ),
    (BEHAVIOUR + ": message for backend='dask' without dask", r"^test_dask_backend_when_dask", None),
    (
        BEHAVIOUR + ": initializer= and other executor options refused by name "
        "(joblet's process pool is shared across calls)",
        r"^test_initializer_",
        r"got backend parameters joblet does not support",
    ),
    (
        BEHAVIOUR + ": no loky 'executor underlying Parallel has been shutdown' RuntimeError "
        "when a Parallel starts while an abandoned generator's executor shuts down",
        r"^test_multiple_generator_call_separated_gc\[",
        r"DID NOT RAISE",
    ),
    # test_dask.py
    (
        INTERNALS + ": dask: how many times Dask serializes scattered objects (joblet's "
        "scatter=[...] sends them in one call: fewer than the test's per-object scatters)",
        r"^test_manual_scatter\b",
        None,
    ),
    (
        INTERNALS + ": dask: distributed's thread-leak check counts the one callback thread "
        "distributed starts, once per process, for Future.add_done_callback",
        None,
        r"thread\(s\) were leaked",
    ),
    (
        BEHAVIOUR + ": dask: arguments are scattered from max_nbytes (1 MB), not from 1 kB",
        r"^test_auto_scatter\b",
        None,
    ),
    (
        BEHAVIOUR + ": dask: no n_jobs=1 warning for loky/multiprocessing inside a daemonic "
        "Dask worker (joblet's workers are not multiprocessing children: the pool runs)",
        r"^test_joblib_warning_inside_dask_daemonic_worker\[",
        None,
    ),
]


def classify(name: str, message: str) -> str:
    """The cause group of a failure; ``message`` is its whole message (a subprocess's stderr
    included), of which the regexes need only match a part."""
    base = name.split("::")[-1]
    for group, name_re, msg_re in CAUSES:
        if (name_re is None or re.search(name_re, base)) and (
            msg_re is None or re.search(msg_re, message or "")
        ):
            return group
    exc = re.match(r"([\w.]+(?:Error|Exception|Warning|Failed|Interrupt|Exit)\b)", (message or "").strip())
    return f"other (unclassified): {exc.group(1) if exc else 'assertion'}"


def one_line(message: str) -> str:
    first = (message or "").strip().splitlines()
    return first[0][:220] if first else "(no message)"


def _category(group: str) -> str:
    for prefix in (INTERNALS, SEMI, BEHAVIOUR):
        if group.startswith(prefix):
            return prefix
    return "other (unclassified)"


_ORDER = [INTERNALS, SEMI, BEHAVIOUR, "other (unclassified)"]


def summarize(xml_path: str, verbose_failures: bool, target: str) -> None:
    tree = ET.parse(xml_path)
    counts: collections.Counter = collections.Counter()
    problems = []  # (kind, name, message, details)
    for case in tree.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kids = {child.tag: child for child in case}
        if "failure" in kids or "error" in kids:
            kind = "FAIL" if "failure" in kids else "ERROR"
            counts["failed" if kind == "FAIL" else "error"] += 1
            el = kids["failure" if kind == "FAIL" else "error"]
            problems.append((kind, name, el.get("message", ""), el.text or ""))
        elif "skipped" in kids:
            xfail = kids["skipped"].get("type") == "pytest.xfail"
            counts["xfailed" if xfail else "skipped"] += 1
        else:
            counts["passed"] += 1  # xpassed tests count here (JUnit has no xpass)
    total = sum(counts.values())
    print("=" * 78)
    print(f"joblib {EXPECTED_JOBLIB} test_parallel.py + test_config.py + test_dask.py against {target}")
    print(
        f"total {total}: passed {counts['passed']}, failed {counts['failed']}, "
        f"errors {counts['error']}, skipped {counts['skipped']}, xfailed {counts['xfailed']}"
    )
    if not problems:
        return
    groups: dict[str, list] = collections.defaultdict(list)
    for kind, name, message, details in problems:
        # JUnit cuts long messages; pytest's "E " lines of the report hold all of it.
        e_lines = "\n".join(
            line[1:].strip() for line in (details or "").splitlines() if line.startswith("E ")
        )
        groups[classify(name, f"{message}\n{e_lines}")].append((kind, name, message, details))
    ordered = sorted(groups, key=lambda g: (_ORDER.index(_category(g)), g))

    per_cat = collections.Counter()
    for g in groups:
        per_cat[_category(g)] += len(groups[g])
    print("\nfailures + errors by kind of cause:")
    for cat in _ORDER:
        if per_cat[cat]:
            print(f"  {per_cat[cat]:4}  {cat}")
    print("\nby cause (count, distinct tests, a representative failure):")
    for g in ordered:
        items = groups[g]
        bases = sorted({n.split("::")[-1].split("[")[0] for _, n, _, _ in items})
        print(f"  {len(items):4}  {g}")
        print(f"        tests: {', '.join(bases)}")
        print(f"        e.g. {items[0][1]}: {one_line(items[0][2])}")
    print("=" * 78)
    print("every failure and error, grouped by cause:")
    for g in ordered:
        items = groups[g]
        print(f"\n## {g} ({len(items)})")
        for kind, name, message, details in items:
            print(f"  {kind:5} {name}: {one_line(message)}")
            if verbose_failures:
                print(textwrap.indent((details or "").strip()[-1500:], "        | "))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timeout", type=int, default=60, help="per-test timeout (s)")
    ap.add_argument("--total-timeout", type=int, default=900, help="bound on the pytest run (s)")
    ap.add_argument("-k", dest="k", default=None, help="pytest -k expression")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--xml", default=None, help="also copy the JUnit XML here")
    ap.add_argument(
        "--no-isolation", action="store_true",
        help="do not reset joblet's parallel_config / default backend between tests",
    )
    ap.add_argument(
        "--baseline", action="store_true",
        help="run the same tests unmodified, against joblib itself (for comparison)",
    )
    ap.add_argument("--verbose-failures", action="store_true", help="print tracebacks' tails")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args()

    import joblib
    import joblet

    where = os.path.dirname(joblet.__file__)
    try:
        head = subprocess.run(
            ["git", "-C", where, "log", "-1", "--format=%h %s"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--", "../../python", "../../crates"],
            capture_output=True, text=True,
        ).stdout.strip()
        print(f"joblet from {where}: commit {head[:100]}" + (" (+ uncommitted changes)" if dirty else ""))
    except OSError:
        print(f"joblet from {where}")
    if joblib.__version__ != EXPECTED_JOBLIB:
        print(f"warning: joblib is {joblib.__version__}, this script targets {EXPECTED_JOBLIB}")
    src = os.path.join(os.path.dirname(joblib.__file__), "test")

    tmp = tempfile.mkdtemp(prefix="joblet_joblib_compat_")
    try:
        with open(os.path.join(src, "test_parallel.py"), encoding="utf-8") as fh:
            par = fh.read()
        with open(os.path.join(src, "test_config.py"), encoding="utf-8") as fh:
            cfg = fh.read()
        dask = None
        if importlib.util.find_spec("distributed") is not None:
            with open(os.path.join(src, "test_dask.py"), encoding="utf-8") as fh:
                dask = fh.read()
        else:
            print("distributed is not installed: test_dask.py left out")
        if not args.baseline:
            par = rewrite(par, PARALLEL_REWRITES, "test_parallel.py")
            cfg = rewrite(cfg, CONFIG_REWRITES, "test_config.py")
            if dask is not None:
                dask = rewrite(dask, DASK_REWRITES, "test_dask.py")
        elif dask is not None:
            # Unmodified but for its package-relative imports and the fixtures it needs.
            for old, new in [
                ("from .. import", "from joblib import"),
                ("from .._dask import", "from joblib._dask import"),
                ("from ..parallel import", "from joblib.parallel import"),
                ("from .common import", "from joblib.test.common import"),
                ("from .test_parallel import", "from joblib.test.test_parallel import"),
                (DASK_REWRITES[-1][0], DASK_REWRITES[-1][1]),
            ]:
                dask = dask.replace(old, new)
        files = [("test_parallel.py", par), ("test_config.py", cfg)]
        if dask is not None:
            files.append(("test_dask.py", dask))
        for fname, text in files + [
            ("_joblet_compat_shim.py", SHIM),
            ("pytest.ini", PYTEST_INI),
        ] + ([] if args.no_isolation or args.baseline else [("conftest.py", CONFTEST)]):
            with open(os.path.join(tmp, fname), "w", encoding="utf-8") as fh:
                fh.write(text)
        xml = os.path.join(tmp, "junit.xml")
        cmd = [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rN",
            "--no-header", "--timeout", str(args.timeout), f"--junitxml={xml}",
            "-o", "junit_family=xunit1", "--rootdir", tmp, "-c", os.path.join(tmp, "pytest.ini"),
        ]
        if args.k:
            cmd += ["-k", args.k]
        cmd += args.pytest_args + [name for name, _ in files]
        env = dict(os.environ)
        env["PYTHONPATH"] = tmp + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("PYTEST_ADDOPTS", None)
        leaks = os.path.join(tmp, "leaks.txt")
        env["JOBLET_COMPAT_LEAKS"] = leaks
        print("running:", " ".join(cmd), f"(in {tmp})", flush=True)
        log = os.path.join(tmp, "pytest.log")
        with open(log, "w") as out:
            # Its own session, so that on --total-timeout the whole group it started
            # (pytest and its worker processes) can be stopped.
            proc = subprocess.Popen(
                cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                proc.wait(timeout=args.total_timeout)
            except subprocess.TimeoutExpired:
                print(f"pytest ran past --total-timeout={args.total_timeout}s and was stopped")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with open(log, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        final = re.findall(r"^=*\s*(\d+ (?:failed|passed).* in [\d.]+s.*?)\s*=*$", text, re.M)
        status = proc.returncode
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        print(f"pytest: {final[-1] if final else '(no summary line)'}; {how}")
        fatal = re.findall(r"^(Fatal Python error: .*|thread '.*' panicked at .*)$", text, re.M)
        if fatal:
            print("the pytest process itself reported (after the tests, at interpreter exit):")
            for line in dict.fromkeys(fatal):
                print("  " + line)
        if not os.path.exists(xml):
            print("no JUnit XML was written; nothing to summarize")
            return 0
        if args.xml:
            shutil.copyfile(xml, args.xml)
        summarize(xml, args.verbose_failures, "joblib itself (--baseline)" if args.baseline else "joblet")
        if os.path.exists(leaks):
            with open(leaks) as fh:
                lines = fh.read().splitlines()
            print(f"\ntests that left joblet's context changed (reset by conftest.py): {len(lines)}")
            for line in lines:
                print("  " + line)
    finally:
        if args.keep:
            print(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
