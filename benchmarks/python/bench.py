"""joblet's Python front against joblib and the standard library, side by side in one run.

Every system runs the same workloads on the same data in this one process (each in turn,
interleaved over repetitions), every result is checked, and the report gives medians and
ratios to joblib-loky. Run it with the project venv:

    .venv/bin/python benchmarks/python/bench.py [--quick] [--plot PNG]

Systems: joblet (loky, threading), joblib 1.6 (loky, threading, multiprocessing), mpire,
multiprocessing.Pool and ProcessPoolExecutor (spawn contexts), a list comprehension.
Workloads: the seed's example 1; 100,000 tiny tasks; 2,000 tasks of ~1 ms of pure-Python
work; 64 tasks receiving an 8 MB array; 32 tasks returning an 8 MB array; the time to the
first result in unordered mode; the time for an error in task 10 of 1,000 to reach the
caller. (First call in a fresh interpreter is measured in subprocesses.)
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time

import joblib
import numpy as np

import joblet

N_JOBS = 2


def tiny(x):
    return x + 1


def busy_1ms(x):
    # About 1 ms of pure-Python work on the 2-core reference VM (1.2 ms measured). A fixed
    # count, not a calibrated one: every system's workers must do the same work.
    s = 0
    for i in range(16_000):
        s += i ^ x
    return s


def seed_fn(x):
    return np.sum(x**2)


def array_sum(a):
    return float(a.sum())


def make_array(k):
    return np.full(1 << 20, float(k))


def fail_at_10(i):
    if i == 10:
        raise ValueError("task 10 fails")
    time.sleep(0.001)
    return i


def systems():
    out = {
        "joblet loky": lambda f, xs: joblet.Parallel(n_jobs=N_JOBS)(joblet.delayed(f)(x) for x in xs),
        "joblet threading": lambda f, xs: joblet.Parallel(n_jobs=N_JOBS, backend="threading")(
            joblet.delayed(f)(x) for x in xs
        ),
        "joblib loky": lambda f, xs: joblib.Parallel(n_jobs=N_JOBS)(joblib.delayed(f)(x) for x in xs),
        "joblib threading": lambda f, xs: joblib.Parallel(n_jobs=N_JOBS, backend="threading")(
            joblib.delayed(f)(x) for x in xs
        ),
        "joblib multiprocessing": lambda f, xs: joblib.Parallel(n_jobs=N_JOBS, backend="multiprocessing")(
            joblib.delayed(f)(x) for x in xs
        ),
        "multiprocessing.Pool": lambda f, xs: POOL.map(f, xs),
        "mpire": lambda f, xs: MPIRE.map(f, xs, concatenate_numpy_output=False),
        "ProcessPoolExecutor": lambda f, xs: list(EXECUTOR.map(f, xs, chunksize=max(1, len(xs) // (4 * N_JOBS)))),
        "list comprehension": lambda f, xs: [f(x) for x in xs],
    }
    return out


def timed(run, f, xs, expected, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        got = run(f, xs)
        times.append(time.perf_counter() - t)
        check(got, expected)
    return statistics.median(times)


def check(got, expected):
    assert len(got) == len(expected), (len(got), len(expected))
    for g, e in zip(got, expected):
        if isinstance(e, np.ndarray):
            assert np.array_equal(g, e)
        else:
            assert g == e, (g, e)


def first_call(system: str) -> float:
    code = {
        "joblet loky": "import joblet as j",
        "joblib loky": "import joblib as j",
    }[system]
    script = (
        f"{code}\nimport time\nt=time.perf_counter()\n"
        "r=j.Parallel(n_jobs=2)(j.delayed(abs)(-i) for i in range(10))\n"
        "assert r==list(range(10))\nprint(time.perf_counter()-t)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    quick = "--quick" in sys.argv
    reps = 3 if quick else 5
    global POOL, EXECUTOR, MPIRE
    import mpire

    MPIRE = mpire.WorkerPool(n_jobs=N_JOBS, keep_alive=True)
    POOL = mp.get_context("spawn").Pool(N_JOBS)
    EXECUTOR = cf.ProcessPoolExecutor(N_JOBS, mp_context=mp.get_context("spawn"))
    sysmap = systems()
    rng = np.random.default_rng(0)
    seed_data = [rng.random(1000) for _ in range(10)]
    n_tiny = 20_000 if quick else 100_000
    n_busy = 500 if quick else 2000
    arrays = [make_array(k) for k in range(64)]
    workloads = [
        ("seed example 1", seed_fn, seed_data, [seed_fn(x) for x in seed_data]),
        (f"{n_tiny} tiny tasks", tiny, list(range(n_tiny)), [x + 1 for x in range(n_tiny)]),
        (f"{n_busy} tasks of ~1 ms", busy_1ms, list(range(n_busy)), None),
        ("64 x 8 MB arrays in", array_sum, arrays, [float(a.sum()) for a in arrays]),
        ("32 x 8 MB arrays out", make_array, list(range(32)), [make_array(k) for k in range(32)]),
    ]
    print(f"# joblet Python bench, {time.strftime('%Y-%m-%d %H:%M:%S')} UTC, n_jobs={N_JOBS}")
    print(f"# machine: {os.cpu_count()} CPUs, {sys.version.split()[0]}, joblib {joblib.__version__}, joblet {joblet.__version__}, numpy {np.__version__}")
    results = {}
    for name, f, xs, expected in workloads:
        if expected is None:
            expected = [f(x) for x in xs]
        print(f"\n[{name}] median of {reps}")
        for run in sysmap.values():
            run(f, xs[: max(2, len(xs) // 50)])  # warm the pool
        # Interleaved: each repetition runs every system once, so that drift in the machine's
        # state (other tenants, memory) spreads over all systems instead of landing on one.
        times: dict = {system: [] for system in sysmap}
        for _ in range(reps):
            for system, run in sysmap.items():
                times[system].append(timed(run, f, xs, expected, 1))
        row = {system: statistics.median(ts) for system, ts in times.items()}
        base = row["joblib loky"]
        for system, d in row.items():
            print(f"  {system:24s} {d * 1e3:10.1f} ms   {d / base:6.2f}x joblib-loky")
        if "~1 ms" in name:
            serial = row["list comprehension"]
            for system in ("joblet loky", "joblet threading", "joblib loky"):
                print(f"  parallel efficiency {system}: {serial / (N_JOBS * row[system]):.2f}")
        results[name] = row
    print("\n[first call in a fresh interpreter] 3 runs each, median")
    for system in ("joblet loky", "joblib loky"):
        d = statistics.median(first_call(system) for _ in range(3))
        print(f"  {system:24s} {d * 1e3:10.1f} ms")
    print("\n[time to first result, generator_unordered, 200 tasks of ~1 ms]")
    for label, mod in (("joblet loky", joblet), ("joblib loky", joblib)):
        ds = []
        for _ in range(reps):
            t = time.perf_counter()
            it = mod.Parallel(n_jobs=N_JOBS, return_as="generator_unordered")(mod.delayed(busy_1ms)(i) for i in range(200))
            next(iter(it))
            ds.append(time.perf_counter() - t)
            for _ in it:
                pass
        print(f"  {label:24s} {statistics.median(ds) * 1e3:10.1f} ms")
    print("\n[error in task 10 of 1,000 reaching the caller]")
    for label, mod in (("joblet loky", joblet), ("joblib loky", joblib)):
        ds = []
        for _ in range(reps):
            t = time.perf_counter()
            try:
                mod.Parallel(n_jobs=N_JOBS)(mod.delayed(fail_at_10)(i) for i in range(1000))
            except ValueError:
                ds.append(time.perf_counter() - t)
            else:
                raise AssertionError(f"{label}: no error")
        print(f"  {label:24s} {statistics.median(ds) * 1e3:10.1f} ms")
    POOL.terminate()
    EXECUTOR.shutdown()
    MPIRE.terminate()
    if "--plot" in sys.argv:
        plot(results, sys.argv[sys.argv.index("--plot") + 1])


def plot(results: dict, path: str) -> None:
    """A bar chart of each workload's times relative to joblib-loky (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    systems = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(systems)
    for k, system in enumerate(systems):
        ratios = [results[n][system] / results[n]["joblib loky"] for n in names]
        ax.bar([i + k * width for i in range(len(names))], ratios, width, label=system)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))])
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("time / joblib-loky time (log; lower is faster)")
    ax.set_title(f"joblet vs joblib and the standard library, n_jobs={N_JOBS}, {os.cpu_count()} CPUs")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
