"""The dask backend: joblet against joblib 1.6's own dask backend, side by side in one run,
on one local cluster, same data.

Run it with the project venv:

    .venv/bin/python benchmarks/python/bench_dask.py [--tasks 100000] [--reps 5]

The cluster is a ``distributed.LocalCluster`` of two worker processes with one thread each
(loopback). Cases, each under ``parallel_config(backend="dask")`` of the library measured (a
fresh backend per repetition, so that auto-batching starts from scratch each time):

- ``--tasks`` tiny tasks (``x * x``): the cost per task of batching, shipping and
  collecting;
- 64 tasks on one shared 8 MB float64 array (each returns ``a.sum() + i``): shipping a big
  argument that every task uses.

Every call's results are compared with the expected values. The repetitions alternate
between the two libraries; the medians and their ratio joblet / joblib are reported (below 1:
joblet is faster). Then, once per library and untimed, the shared-array call runs with
``Client.scatter`` wrapped to count what each sends to the cluster apart from the batches.
Target of issue 6: joblet not slower than joblib on either case, and the array moved once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import joblib
import numpy as np
from distributed import Client, LocalCluster

import joblet

SHARED_ELEMENTS = 1 << 20  # 8 MiB of float64
SHARED_TASKS = 64


def square(x: int) -> int:
    return x * x


def sum_plus(a: np.ndarray, i: int) -> float:
    return float(a.sum()) + i


def run(lib: Any, make_tasks: Callable[[], Any]) -> list:
    with lib.parallel_config(backend="dask"):
        return lib.Parallel(n_jobs=-1)(make_tasks())


def timed(f: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = f()
    return time.perf_counter() - start, out


def count_scatters(lib: Any, client: Client, make_tasks: Callable[[], Any]) -> tuple[int, int]:
    """(scatter calls, bytes scattered) of one call, counted on the client class (joblib's
    backend calls it from the client's event loop, joblet's from the caller)."""
    calls = []
    real = Client.scatter

    def counting(self: Client, data: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(int(getattr(data, "nbytes", 0)))
        return real(self, data, *args, **kwargs)

    Client.scatter = counting  # type: ignore[method-assign]
    try:
        run(lib, make_tasks)
    finally:
        Client.scatter = real  # type: ignore[method-assign]
    return len(calls), sum(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    print(
        f"# joblet dask bench, {time.strftime('%Y-%m-%d %H:%M:%S')} UTC, commit {commit}"
        + (" (uncommitted changes)" if dirty.strip() else "")
    )
    import distributed

    print(
        f"# machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"joblib {joblib.__version__}, distributed {distributed.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )
    client = Client(cluster)
    print(f"# cluster: {len(client.ncores())} worker processes x 1 thread, loopback; "
          f"{args.reps} repetitions, alternating")

    n = args.tasks
    expected_tiny = [square(i) for i in range(n)]
    # Whole numbers: their sum is exact in any order (a worker's copy may be aligned
    # differently, and numpy's pairwise sum of random floats then differs in the last bit).
    shared = np.random.default_rng(0).integers(0, 1000, SHARED_ELEMENTS).astype(np.float64)
    total = float(shared.sum())
    expected_shared = [total + i for i in range(SHARED_TASKS)]

    cases = {
        f"{n} tiny tasks": (lambda: (joblib.delayed(square)(i) for i in range(n)), expected_tiny),
        f"{SHARED_TASKS} tasks, one 8 MB array": (
            lambda: (joblib.delayed(sum_plus)(shared, i) for i in range(SHARED_TASKS)),
            expected_shared,
        ),
    }
    libs = {"joblib": joblib, "joblet": joblet}
    times: dict[str, dict[str, list[float]]] = {c: {name: [] for name in libs} for c in cases}
    for case, (make, expected) in cases.items():
        for name, lib in libs.items():  # warm-up: imports, worker caches
            assert run(lib, make) == expected, f"{name}: wrong results for {case}"
        for rep in range(args.reps):
            order = list(libs.items()) if rep % 2 == 0 else list(libs.items())[::-1]
            for name, lib in order:
                seconds, out = timed(lambda: run(lib, make))
                assert out == expected, f"{name}: wrong results for {case}"
                times[case][name].append(seconds)

    print()
    print(f"{'case':<30}{'joblib':>12}{'joblet':>12}{'joblet/joblib':>15}")
    for case in cases:
        a = statistics.median(times[case]["joblib"])
        b = statistics.median(times[case]["joblet"])
        print(f"{case:<30}{a * 1e3:>9.1f} ms{b * 1e3:>9.1f} ms{b / a:>14.3f}x")
    print()
    print("per task, tiny: " + ", ".join(
        f"{name} {statistics.median(times[f'{n} tiny tasks'][name]) / n * 1e6:.2f} us"
        for name in libs
    ))
    make_shared = cases[f"{SHARED_TASKS} tasks, one 8 MB array"][0]
    for name, lib in libs.items():
        count, nbytes = count_scatters(lib, client, make_shared)
        print(f"{name}: the shared-array call scattered {count} object(s), {nbytes / 1e6:.1f} MB")
    print()
    for case in cases:
        for name in libs:
            print(f"{case} {name}: " + " ".join(f"{t * 1e3:.1f}" for t in times[case][name]) + " ms")
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
