"""``Memory`` cache hits: joblet against joblib 1.6, side by side in one run, same data.

Run it with the project venv:

    .venv/bin/python benchmarks/python/bench_memory.py [--big-mb 500] [--reps 5]

Cases (each library caches the same functions in its own folder under a temporary
directory; the first call computes and stores, the timed calls are hits):

- a hit that returns a small result (a tuple of three numbers), called with a small
  argument: the latency of a lookup (hash the arguments, find the entry, load it);
- a hit that returns a 500 MB float64 array, called with a small argument: loading a big
  output (in memory, then with ``mmap_mode="r"``);
- a hit whose argument is the 500 MB array (returning its sum): hashing a big argument.

Every hit's value is compared with the computed one. Reports medians, and the ratio
joblet / joblib of each (below 1: joblet is faster). Target of issue 5: a cache hit at most
0.2x joblib's latency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import joblib
import numpy as np

import joblet

BIG_ELEMENTS = 0
BIG_OUT = "big output hit"
BIG_OUT_MMAP = "big output hit, mmap"
BIG_ARG = "big argument hit"


def small_result(x: int) -> tuple:
    return (x, x * 2.5, str(x))


def big_result(seed: int) -> np.ndarray:
    return np.full(BIG_ELEMENTS, float(seed))


def sum_of(a: np.ndarray) -> float:
    return float(a.sum())


def timed(f: Callable[[], Any]) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main() -> None:
    global BIG_ELEMENTS
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-mb", type=int, default=500)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    BIG_ELEMENTS = args.big_mb * (1 << 20) // 8
    big_input = np.linspace(0.0, 1.0, BIG_ELEMENTS)

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"# joblet Memory bench, {time.strftime('%Y-%m-%d %H:%M:%S')} UTC, commit {commit}")
    print(
        f"# machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"joblib {joblib.__version__}, joblet {joblet.__version__}, numpy {np.__version__}"
    )
    print(f"# big array: {BIG_ELEMENTS * 8 / 1e6:.0f} MB; {args.reps} repetitions, interleaved")

    folder = tempfile.mkdtemp(prefix="joblet-memory-bench-")
    times: Dict[str, Dict[str, List[float]]] = {}
    try:
        libs = {}
        for name, lib in (("joblib", joblib), ("joblet", joblet)):
            memory = lib.Memory(os.path.join(folder, name), verbose=0)
            mapped = lib.Memory(os.path.join(folder, name + "-mmap"), mmap_mode="r", verbose=0)
            libs[name] = {
                "small hit": memory.cache(small_result),
                BIG_OUT: memory.cache(big_result),
                BIG_OUT_MMAP: mapped.cache(big_result),
                BIG_ARG: memory.cache(sum_of),
            }
            # First calls: compute and store.
            libs[name]["small hit"](3)
            libs[name][BIG_OUT](7)
            libs[name][BIG_OUT_MMAP](7)
            libs[name][BIG_ARG](big_input)
        expected = {
            "small hit": small_result(3),
            BIG_OUT: 7.0,
            BIG_OUT_MMAP: 7.0,
            BIG_ARG: sum_of(big_input),
        }
        calls = {
            "small hit": lambda f: f(3),
            BIG_OUT: lambda f: f(7),
            BIG_OUT_MMAP: lambda f: f(7),
            BIG_ARG: lambda f: f(big_input),
        }
        for rep in range(args.reps):
            order = ["joblib", "joblet"] if rep % 2 == 0 else ["joblet", "joblib"]
            for case, call in calls.items():
                for name in order:
                    f = libs[name][case]
                    inner = 200 if case == "small hit" else 1
                    result: List[Any] = []
                    t = timed(lambda: [result.append(call(f)) for _ in range(inner)]) / inner
                    got = result[-1]
                    if isinstance(got, np.ndarray):
                        assert got.shape == (BIG_ELEMENTS,) and got[0] == got[-1] == expected[case]
                    else:
                        assert got == expected[case], (name, case, got)
                    del result, got
                    times.setdefault(case, {}).setdefault(name, []).append(t)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print()
    print(f"{'case':<26}{'joblib':>12}{'joblet':>12}{'joblet/joblib':>15}")
    for case, by in times.items():
        a = statistics.median(by["joblib"])
        b = statistics.median(by["joblet"])
        unit, scale = ("ms", 1e3) if a > 1e-3 or b > 1e-3 else ("us", 1e6)
        print(f"{case:<26}{a * scale:>9.3f} {unit}{b * scale:>9.3f} {unit}{b / a:>14.3f}x")
    small = statistics.median(times["small hit"]["joblet"]) / statistics.median(
        times["small hit"]["joblib"]
    )
    print()
    print(
        f"target (issue 5): a small cache hit <= 0.2x joblib's latency: {small:.3f}x "
        f"{'MET' if small <= 0.2 else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
