//! The process-pool bench: joblet's process backend (`n_jobs` 2) beside procspawn's process
//! pool (`procspawn::Pool::new(2)`) running the same functions on the same data, and, where it
//! makes sense, a plain in-process loop; every result of every run is checked.
//!
//! 1. **Tiny tasks**: 100,000 calls of a trivial registered function (`x + 1` on a `u64`),
//!    joblet with auto batching: wall time and amortized cost per task (wall / n).
//!    Targets: joblet ≤ 5 µs per task, and ≥ 10× faster per task than procspawn's pool.
//! 2. **Latency**: one unbatched task per call (`batch_size(1)`) on a warm pool, many calls:
//!    median and p99 round trip. **Pool start**: the first call with fresh workers (two tasks,
//!    one per worker), timed in a fresh child process (this binary re-executed with
//!    `--child cold joblet|procspawn`) so that no worker exists yet; for procspawn that is
//!    `Pool::new(2)` and the first two tasks.
//! 3. **Big data**: 64 tasks each taking an 8 MiB argument and returning its sum, and 32 tasks
//!    each returning 8 MiB: throughput in GB/s, with `Vec<f64>` (serde, number by number) and
//!    `joblet::Buffer<f64>` (one block of bytes), against a plain memcpy of the same bytes in
//!    the same run (into a pre-touched buffer, and into fresh `Vec`s). Target: joblet at least
//!    half of memcpy's bandwidth (the pre-touched one). `Vec` arguments are cloned before the
//!    clock and freed inside the call; `Buffer` arguments are cheap clones (shared values) of
//!    buffers made once, for joblet and procspawn alike.
//!
//! Workers are this binary re-executed: `main` calls `joblet::worker_hook()` and then
//! `procspawn::init()` before anything else.
//!
//! Timings are repeated with the contenders interleaved (their order rotates each run) so
//! that machine noise hits all of them alike; tables give the median and the min.
//!
//! Run it with `cargo bench -p joblet --bench processes` (or `benchmarks/run.sh processes`).
//! `-- --quick` or `JOBLET_BENCH_QUICK=1` gives a smoke run with small sizes; so does running
//! the binary without cargo bench's `--bench` flag (as `cargo test --benches` does).
//! `-- --only tiny|latency|start|big` runs one case, e.g. under `perf record`.

mod support;
use joblet::{Backend, Buffer, Event, Parallel};
use std::collections::VecDeque;
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{fmt_dur, label, secs, verdict, Samples};

// ---------------------------------------------------------------------------------------------
// The work: registered functions (joblet runs them by name; procspawn gets fn pointers to the
// same functions)
// ---------------------------------------------------------------------------------------------

/// Both pools have this many workers.
const WORKERS: usize = 2;

joblet::remote_fn! {
    /// The tiny task.
    fn inc(x: u64) -> u64 {
        x.wrapping_add(1)
    }
}

joblet::remote_fn! {
    /// Sums an 8 MiB argument sent as a serde `Vec<f64>`.
    fn sum_vec(v: Vec<f64>) -> f64 {
        sum(&v)
    }
}

joblet::remote_fn! {
    /// Sums an 8 MiB argument sent as a `Buffer<f64>`.
    fn sum_buf(v: Buffer<f64>) -> f64 {
        sum(&v)
    }
}

joblet::remote_fn! {
    /// Makes the `n` values of vector `k`, returned as a serde `Vec<f64>`.
    fn make_vec(k: u64, n: u64) -> Vec<f64> {
        make(k, n)
    }
}

joblet::remote_fn! {
    /// Makes the `n` values of vector `k`, returned as a `Buffer<f64>`.
    fn make_buf(k: u64, n: u64) -> Buffer<f64> {
        Buffer::from(make(k, n))
    }
}

/// A sum with eight independent accumulators, so that it runs at memory speed rather than
/// at one add latency per value. The values are small integers: the sum is exact, in any order.
fn sum(xs: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f64>() + rest.iter().sum::<f64>()
}

/// Value `i` of vector `k`: a small integer, so that sums are exact. Computed in `i32`, whose
/// conversion to `f64` vectorizes: making 8 MiB in memory already touched takes ~0.3 ms, so
/// the results case measures the transfer rather than the making.
fn value(k: u64, i: usize) -> f64 {
    ((i & 1023) as i32 + k as i32) as f64
}

fn make(k: u64, n: u64) -> Vec<f64> {
    (0..n as usize).map(|i| value(k, i)).collect()
}

/// The exact sum of vector `k`, in closed form (not computed by `sum`).
fn expected_sum(k: u64, n: u64) -> f64 {
    let full = n / 1024;
    let rest = n % 1024;
    let s = n * k + full * (1023 * 1024 / 2) + rest * (rest.saturating_sub(1)) / 2;
    s as f64
}

/// The input data of item `i` (splitmix64), so that inputs are not just `0..n`.
fn input(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// Bytes per second, in GB/s (10^9 bytes).
fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / secs(d) / 1e9
}

/// joblet's process backend as every case uses it: two workers, defaults otherwise.
fn joblet_pool() -> Parallel {
    Parallel::new()
        .n_jobs(WORKERS as i64)
        .backend(Backend::Processes)
}

/// The batches a joblet call dispatched: how many, and the largest.
fn watch_batches(par: &Parallel) -> (Parallel, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let batches = Arc::new(AtomicUsize::new(0));
    let largest = Arc::new(AtomicUsize::new(0));
    let (b, l) = (Arc::clone(&batches), Arc::clone(&largest));
    let watched = par.clone().on_progress(move |p| {
        if let Event::Dispatched { count, .. } = p.event {
            b.fetch_add(1, Ordering::Relaxed);
            l.fetch_max(count, Ordering::Relaxed);
        }
    });
    (watched, batches, largest)
}

/// Runs `f(arg)` for every argument on procspawn's pool, at most `window` spawned and not yet
/// joined at any time (joined in order), and returns the values in input order.
fn procspawn_map<A, R>(
    pool: &procspawn::Pool,
    args: impl IntoIterator<Item = A>,
    f: fn(A) -> R,
    window: usize,
) -> Vec<R>
where
    A: serde::Serialize + serde::de::DeserializeOwned,
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let mut out = Vec::new();
    let mut pending = VecDeque::with_capacity(window);
    for a in args {
        if pending.len() == window {
            let h: procspawn::JoinHandle<R> = pending.pop_front().expect("window > 0");
            out.push(h.join().expect("procspawn task failed"));
        }
        pending.push_back(pool.spawn(a, f));
    }
    for h in pending {
        out.push(h.join().expect("procspawn task failed"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Case 1: tiny tasks
// ---------------------------------------------------------------------------------------------

struct TinyTimes {
    seq: Samples,
    joblet: Samples,
    procspawn: Samples,
    batches: usize,
    largest_batch: usize,
}

fn case_tiny(cfg: &Config, pool: &procspawn::Pool) -> TinyTimes {
    let n = cfg.tiny_tasks;
    let m = cfg.procspawn_tiny_tasks;
    let data: Arc<Vec<u64>> = Arc::new((0..n as u64).map(input).collect());
    let expected: Vec<u64> = data.iter().map(|&x| x.wrapping_add(1)).collect();
    let par = joblet_pool();

    let run_one = |which: usize| -> Duration {
        match which {
            0 => {
                let t = Instant::now();
                let out: Vec<u64> = data.iter().map(|&x| inc(black_box(x))).collect();
                let took = t.elapsed();
                assert_eq!(out, expected, "in-process loop: wrong results");
                took
            }
            1 => {
                let t = Instant::now();
                let out = par
                    .try_run(data.iter().map(|&x| inc::task(x)))
                    .expect("joblet call failed");
                let took = t.elapsed();
                assert_eq!(out, expected, "joblet: wrong results");
                took
            }
            _ => {
                let t = Instant::now();
                let out = procspawn_map(pool, data[..m].iter().copied(), inc, cfg.procspawn_window);
                let took = t.elapsed();
                assert_eq!(out, expected[..m], "procspawn: wrong results");
                took
            }
        }
    };

    // Warm-up: joblet's workers for this n_jobs, procspawn's, the allocator.
    for which in 0..3 {
        run_one(which);
    }
    let mut times: [Samples; 3] = Default::default();
    for run in 0..cfg.runs {
        for k in 0..3 {
            let which = (run + k) % 3;
            times[which].push(run_one(which));
        }
    }

    // One more joblet call, untimed, to see the batches auto batching chose.
    let (watched, batches, largest) = watch_batches(&par);
    let out = watched
        .try_run(data.iter().map(|&x| inc::task(x)))
        .expect("joblet call failed");
    assert_eq!(out, expected, "joblet (watched): wrong results");

    let [seq, joblet, procspawn] = times;
    TinyTimes {
        seq,
        joblet,
        procspawn,
        batches: batches.load(Ordering::Relaxed),
        largest_batch: largest.load(Ordering::Relaxed),
    }
}

// ---------------------------------------------------------------------------------------------
// Case 2: round-trip latency on a warm pool, and pool start in a fresh child process
// ---------------------------------------------------------------------------------------------

struct Latency {
    joblet: Samples,
    procspawn: Samples,
    /// joblet calls alternating between one task and two tasks (see `case_latency`): the
    /// one-task calls, and the two-task calls.
    alternating_one: Samples,
    alternating_two: Samples,
}

fn case_latency(cfg: &Config, pool: &procspawn::Pool) -> Latency {
    let par = joblet_pool().batch_size(1);
    let mut lat = Latency {
        joblet: Samples::default(),
        procspawn: Samples::default(),
        alternating_one: Samples::default(),
        alternating_two: Samples::default(),
    };
    let joblet_one = |x: u64| -> Duration {
        let t = Instant::now();
        let out = par
            .try_run(std::iter::once(inc::task(x)))
            .expect("joblet call failed");
        let took = t.elapsed();
        assert_eq!(out, [x.wrapping_add(1)], "joblet: wrong result");
        took
    };
    let procspawn_one = |x: u64| -> Duration {
        let t = Instant::now();
        let out = pool.spawn(x, inc).join().expect("procspawn task failed");
        let took = t.elapsed();
        assert_eq!(out, x.wrapping_add(1), "procspawn: wrong result");
        took
    };
    // Warm-up (joblet's pool may hold workers of another size from the previous case).
    for i in 0..20 {
        joblet_one(input(i));
        procspawn_one(input(i));
    }
    // One call each, alternating, so that noise hits both alike.
    for i in 0..cfg.latency_calls as u64 {
        let x = input(i);
        if i % 2 == 0 {
            lat.joblet.push(joblet_one(x));
            lat.procspawn.push(procspawn_one(x));
        } else {
            lat.procspawn.push(procspawn_one(x));
            lat.joblet.push(joblet_one(x));
        }
    }
    // A program whose calls have one and two tasks in turn, same `Parallel`: a one-task call
    // uses one worker, and must neither shrink the pool nor change the workers' thread limit,
    // or the next call starts workers again (milliseconds; it did before commit 964d891).
    // Both calls are timed.
    for i in 0..cfg.alternating_calls as u64 {
        let x = input(i);
        let t = Instant::now();
        let two = par
            .try_run([inc::task(x), inc::task(x + 1)])
            .expect("joblet call failed");
        lat.alternating_two.push(t.elapsed());
        assert_eq!(two, [x.wrapping_add(1), x.wrapping_add(2)]);
        lat.alternating_one.push(joblet_one(x));
    }
    lat
}

/// The child side of the pool-start measurement: `--child cold joblet|procspawn`. Times the
/// first call (two tasks, one per worker) with no worker started yet, then a second call on the
/// now warm pool. Prints one `CHILD ...` line.
fn child(args: &[String]) {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    assert_eq!(arg(0), "cold", "--child: unknown mode");
    let who = arg(1);
    let xs = [input(1), input(2)];
    let want = xs.map(|x| x.wrapping_add(1));
    let (first, warm) = match who {
        "joblet" => {
            let par = joblet_pool().batch_size(1);
            let call = || {
                let t = Instant::now();
                let out = par.try_run(xs.map(inc::task)).expect("joblet call failed");
                let took = t.elapsed();
                assert_eq!(out, want, "joblet: wrong results");
                took
            };
            (call(), call())
        }
        "procspawn" => {
            let t = Instant::now();
            let pool = procspawn::Pool::new(WORKERS).expect("procspawn pool");
            let out = procspawn_map(&pool, xs, inc, WORKERS);
            let first = t.elapsed();
            assert_eq!(out, want, "procspawn: wrong results");
            let t = Instant::now();
            let out = procspawn_map(&pool, xs, inc, WORKERS);
            let warm = t.elapsed();
            assert_eq!(out, want, "procspawn: wrong results");
            (first, warm)
        }
        other => panic!("--child cold: unknown pool {other:?}"),
    };
    println!(
        "CHILD first_ns={} warm_ns={}",
        first.as_nanos(),
        warm.as_nanos()
    );
}

/// Runs one child and returns its (first call, second call) times.
fn run_child(who: &str) -> (Duration, Duration) {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(["--child", "cold", who])
        .output()
        .expect("could not start the child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {who} failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("CHILD "))
        .unwrap_or_else(|| panic!("child {who} printed no report: {stdout}"));
    let field = |name: &str| -> Duration {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .map(Duration::from_nanos)
            .unwrap_or_else(|| panic!("child report without {name}: {line}"))
    };
    (field("first_ns"), field("warm_ns"))
}

struct ColdStart {
    /// joblet, procspawn: first call, second call.
    first: [Samples; 2],
    warm: [Samples; 2],
}

fn case_cold_start(reps: usize) -> ColdStart {
    let mut c = ColdStart {
        first: Default::default(),
        warm: Default::default(),
    };
    for rep in 0..reps {
        for k in 0..2 {
            let which = (rep + k) % 2;
            let (first, warm) = run_child(["joblet", "procspawn"][which]);
            c.first[which].push(first);
            c.warm[which].push(warm);
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Case 3: big data
// ---------------------------------------------------------------------------------------------

/// The contenders of case 3, in table order.
const BIG: [&str; 7] = [
    "memcpy, pre-touched dst",
    "memcpy into fresh Vecs",
    "in-process loop",
    "joblet Vec<f64>",
    "joblet Buffer<f64>",
    "procspawn Vec<f64>",
    "procspawn Buffer<f64>",
];
const MEMCPY: usize = 0;
const MEMCPY_FRESH: usize = 1;
const IN_PROCESS: usize = 2;
const JOBLET_VEC: usize = 3;
const JOBLET_BUF: usize = 4;
const PROCSPAWN_VEC: usize = 5;
const PROCSPAWN_BUF: usize = 6;

struct BigTimes {
    /// One per contender of `BIG`.
    args: [Samples; 7],
    results: [Samples; 7],
    /// joblet's batches (Vec, Buffer), arguments then results: (count, largest).
    batches: [(usize, usize); 4],
}

fn case_big(cfg: &Config, pool: &procspawn::Pool) -> BigTimes {
    let n = cfg.big_len;
    let sources: Vec<Vec<f64>> = (0..cfg.big_args as u64)
        .map(|k| make(k, n as u64))
        .collect();
    let sums: Vec<f64> = (0..cfg.big_args as u64)
        .map(|k| expected_sum(k, n as u64))
        .collect();
    for (k, s) in sources.iter().enumerate() {
        assert_eq!(sum(s), sums[k], "the data or its closed-form sum is wrong");
    }
    // memcpy's destination, touched once so that its pages exist.
    let mut dst = vec![1.0f64; n];
    let par = joblet_pool();
    // procspawn's `spawn` sends the argument before it returns, and a worker reads it only when
    // it takes the call, while a worker's result waits for `join`: with big arguments, more
    // handles than workers in flight deadlock (seen with 3 and more).
    let ps_window = WORKERS;

    // memcpy of the first `count` sources into the pre-touched destination.
    let memcpy = |count: usize, dst: &mut Vec<f64>| -> Duration {
        let t = Instant::now();
        for s in &sources[..count] {
            dst.copy_from_slice(s);
            black_box(&mut *dst);
        }
        let took = t.elapsed();
        assert!(dst[..] == sources[count - 1][..], "memcpy: wrong copy");
        took
    };

    // Sums of the sources, by each contender. A task owns its argument: `Vec` arguments are
    // cloned before the clock starts, and freed inside the call as the contender does it;
    // `Buffer` arguments are clones of buffers made once (a clone shares the values, as a
    // caller sending one buffer to many calls would do), for joblet and procspawn alike.
    let buffers: Vec<Buffer<f64>> = sources.iter().map(|s| Buffer::from(s.clone())).collect();
    let run_args = |which: usize, dst: &mut Vec<f64>| -> Duration {
        let owned = || sources.to_vec();
        let shared = || buffers.clone();
        let (took, got): (Duration, Vec<f64>) = match which {
            MEMCPY => return memcpy(sources.len(), dst),
            MEMCPY_FRESH => {
                let t = Instant::now();
                let copies: Vec<Vec<f64>> = sources.iter().map(|s| s.to_vec()).collect();
                let took = t.elapsed();
                assert!(copies == sources, "memcpy: wrong copies");
                return took;
            }
            IN_PROCESS => {
                let t = Instant::now();
                let got = sources.iter().map(|s| sum(black_box(s))).collect();
                (t.elapsed(), got)
            }
            JOBLET_VEC => {
                let inputs = owned();
                let t = Instant::now();
                let got = par
                    .try_run(inputs.into_iter().map(sum_vec::task))
                    .expect("joblet call failed");
                (t.elapsed(), got)
            }
            JOBLET_BUF => {
                let inputs = shared();
                let t = Instant::now();
                let got = par
                    .try_run(inputs.into_iter().map(sum_buf::task))
                    .expect("joblet call failed");
                (t.elapsed(), got)
            }
            PROCSPAWN_VEC => {
                let inputs = owned();
                let t = Instant::now();
                let got = procspawn_map(pool, inputs, |v: Vec<f64>| sum_vec(v), ps_window);
                (t.elapsed(), got)
            }
            _ => {
                let inputs = shared();
                let t = Instant::now();
                let got = procspawn_map(pool, inputs, |v: Buffer<f64>| sum_buf(v), ps_window);
                (t.elapsed(), got)
            }
        };
        assert_eq!(got, sums, "{}: wrong sums", BIG[which]);
        took
    };

    let m = cfg.big_results;
    let check_made = |who: &str, got: &[Vec<f64>]| {
        assert_eq!(got.len(), m, "{who}: wrong number of results");
        for (k, v) in got.iter().enumerate() {
            assert_eq!(v.len(), n, "{who}: result {k} has the wrong length");
            if let Some(i) = (0..n).find(|&i| v[i] != value(k as u64, i)) {
                panic!("{who}: result {k}, value {i} is {}", v[i]);
            }
        }
    };
    // `m` vectors made by each contender, all kept until the end of the run (as a caller
    // keeps its results); checked and freed after the clock stops.
    let run_results = |which: usize, dst: &mut Vec<f64>| -> Duration {
        let ks = 0..m as u64;
        let t = Instant::now();
        let got: Vec<Vec<f64>> = match which {
            MEMCPY => return memcpy(m, dst),
            MEMCPY_FRESH => sources[..m].iter().map(|s| s.to_vec()).collect(),
            IN_PROCESS => ks.map(|k| make(k, black_box(n as u64))).collect(),
            JOBLET_VEC => par
                .try_run(ks.map(|k| make_vec::task(k, n as u64)))
                .expect("joblet call failed"),
            JOBLET_BUF => par
                .try_run(ks.map(|k| make_buf::task(k, n as u64)))
                .expect("joblet call failed")
                .into_iter()
                .map(Buffer::into_inner)
                .collect(),
            PROCSPAWN_VEC => procspawn_map(
                pool,
                ks.map(|k| (k, n as u64)),
                |(k, n): (u64, u64)| make_vec(k, n),
                cfg.procspawn_window,
            ),
            _ => procspawn_map(
                pool,
                ks.map(|k| (k, n as u64)),
                |(k, n): (u64, u64)| make_buf(k, n),
                cfg.procspawn_window,
            )
            .into_iter()
            .map(Buffer::into_inner)
            .collect(),
        };
        let took = t.elapsed();
        check_made(BIG[which], &got);
        took
    };

    // Warm-up: workers of this size, their allocators and outboxes.
    for which in 0..BIG.len() {
        run_args(which, &mut dst);
        run_results(which, &mut dst);
    }
    let mut args: [Samples; 7] = Default::default();
    let mut results: [Samples; 7] = Default::default();
    for run in 0..cfg.big_runs {
        for k in 0..BIG.len() {
            let which = (run + k) % BIG.len();
            args[which].push(run_args(which, &mut dst));
        }
        for k in 0..BIG.len() {
            let which = (run + k) % BIG.len();
            results[which].push(run_results(which, &mut dst));
        }
    }

    // One more joblet call of each kind, untimed, to see the batches auto batching chose.
    let (watched, b, l) = watch_batches(&par);
    let seen = || (b.swap(0, Ordering::Relaxed), l.swap(0, Ordering::Relaxed));
    let got = watched
        .try_run(sources.iter().cloned().map(sum_vec::task))
        .expect("joblet call failed");
    assert_eq!(got, sums, "joblet Vec<f64> (watched): wrong sums");
    let args_vec = seen();
    let got = watched
        .try_run(buffers.iter().cloned().map(sum_buf::task))
        .expect("joblet call failed");
    assert_eq!(got, sums, "joblet Buffer<f64> (watched): wrong sums");
    let args_buf = seen();
    let got = watched
        .try_run((0..m as u64).map(|k| make_vec::task(k, n as u64)))
        .expect("joblet call failed");
    check_made("joblet Vec<f64> (watched)", &got);
    let results_vec = seen();
    let got: Vec<Vec<f64>> = watched
        .try_run((0..m as u64).map(|k| make_buf::task(k, n as u64)))
        .expect("joblet call failed")
        .into_iter()
        .map(Buffer::into_inner)
        .collect();
    check_made("joblet Buffer<f64> (watched)", &got);
    let results_buf = seen();

    BigTimes {
        args,
        results,
        batches: [args_vec, args_buf, results_vec, results_buf],
    }
}

// ---------------------------------------------------------------------------------------------
// The bench
// ---------------------------------------------------------------------------------------------

const CASES: [&str; 4] = ["tiny", "latency", "start", "big"];

struct Config {
    quick: bool,
    /// `--only CASE`: run one case (for profiling), one of `CASES`.
    only: Option<String>,
    /// Runs of cases 1 and 3 per contender (after one warm-up run each).
    runs: usize,
    big_runs: usize,
    tiny_tasks: usize,
    /// procspawn runs the first this-many of the tiny tasks.
    procspawn_tiny_tasks: usize,
    /// procspawn handles spawned and not yet joined, for small arguments.
    procspawn_window: usize,
    latency_calls: usize,
    alternating_calls: usize,
    cold_reps: usize,
    /// f64 values per big argument or result.
    big_len: usize,
    big_args: usize,
    big_results: usize,
}

impl Config {
    fn from_args(args: &[String]) -> Self {
        let flag = |f: &str| args.iter().any(|a| a == f);
        let env_quick =
            std::env::var("JOBLET_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        // Without `--bench` the binary is being run as a test (`cargo test --benches`): smoke run.
        let quick = flag("--quick") || env_quick || !flag("--bench");
        let only = args
            .iter()
            .position(|a| a == "--only")
            .map(|i| args.get(i + 1).cloned().unwrap_or_default());
        if let Some(case) = &only {
            assert!(
                CASES.contains(&case.as_str()),
                "--only takes one of {CASES:?}, not {case:?}"
            );
        }
        let base = Config {
            quick,
            only,
            runs: 7,
            big_runs: 7,
            tiny_tasks: 100_000,
            procspawn_tiny_tasks: 100_000,
            procspawn_window: 64,
            latency_calls: 2_000,
            alternating_calls: 50,
            cold_reps: 10,
            big_len: 1 << 20,
            big_args: 64,
            big_results: 32,
        };
        if quick {
            Config {
                runs: 2,
                big_runs: 2,
                tiny_tasks: 20_000,
                procspawn_tiny_tasks: 2_000,
                latency_calls: 200,
                alternating_calls: 10,
                cold_reps: 2,
                big_args: 8,
                big_results: 4,
                ..base
            }
        } else {
            base
        }
    }

    fn runs_case(&self, case: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == case)
    }
}

/// Case 1's headline figures: per-task times (ns, medians) and the calls procspawn ran.
struct TinyHeadline {
    joblet_ns: f64,
    procspawn_ns: f64,
    seq_ns: f64,
    procspawn_calls: usize,
}

fn report_tiny(cfg: &Config, pool: &procspawn::Pool) -> TinyHeadline {
    let n = cfg.tiny_tasks;
    let m = cfg.procspawn_tiny_tasks;
    println!();
    println!(
        "[1] tiny tasks: x + 1 on a u64, {} calls (procspawn: {} calls, {} spawned ahead of joins)",
        label(n),
        label(m),
        cfg.procspawn_window
    );
    let c1 = case_tiny(cfg, pool);
    let per_task = |s: &Samples, count: usize| secs(s.median()) / count as f64 * 1e9;
    let per_task_min = |s: &Samples, count: usize| secs(s.min()) / count as f64 * 1e9;
    println!(
        "  {:<18} {:>8} {:>12} {:>12} {:>14} {:>14}   ({} runs)",
        "", "calls", "median", "min", "per task med", "per task min", cfg.runs
    );
    for (name, s, count) in [
        ("in-process loop", &c1.seq, n),
        ("joblet", &c1.joblet, n),
        ("procspawn pool", &c1.procspawn, m),
    ] {
        println!(
            "  {:<18} {:>8} {:>12} {:>12} {:>14} {:>14}",
            name,
            label(count),
            fmt_dur(s.median()),
            fmt_dur(s.min()),
            fmt_ns(per_task(s, count)),
            fmt_ns(per_task_min(s, count)),
        );
    }
    println!(
        "  joblet auto batching: {} batches, the largest {} tasks",
        c1.batches, c1.largest_batch
    );
    let h = TinyHeadline {
        joblet_ns: per_task(&c1.joblet, n),
        procspawn_ns: per_task(&c1.procspawn, m),
        seq_ns: per_task(&c1.seq, n),
        procspawn_calls: m,
    };
    println!(
        "  procspawn per task / joblet per task: {:.0}x (medians), {:.0}x (mins)",
        h.procspawn_ns / h.joblet_ns,
        per_task_min(&c1.procspawn, m) / per_task_min(&c1.joblet, n)
    );
    h
}

fn report_latency(cfg: &Config, pool: &procspawn::Pool) -> Latency {
    println!();
    println!(
        "[2] round trip of one unbatched task (batch_size(1), one task per call) on a warm pool, \
         {} calls each, alternating",
        label(cfg.latency_calls)
    );
    let c2 = case_latency(cfg, pool);
    println!(
        "  {:<44} {:>10} {:>10} {:>10} {:>10}",
        "", "median", "p99", "min", "max"
    );
    for (name, s) in [
        ("joblet (a one-task call uses 1 worker)", &c2.joblet),
        ("procspawn pool: spawn + join", &c2.procspawn),
        (
            "joblet, 1-task call after a 2-task call",
            &c2.alternating_one,
        ),
        (
            "joblet, 2-task call after a 1-task call",
            &c2.alternating_two,
        ),
    ] {
        println!(
            "  {:<44} {:>10} {:>10} {:>10} {:>10}",
            name,
            fmt_dur(s.median()),
            fmt_dur(s.percentile(99.0)),
            fmt_dur(s.min()),
            fmt_dur(s.max())
        );
    }
    println!(
        "  (last two lines: {} pairs of calls of 1 and 2 tasks in turn on one Parallel; times \
         like the pool start below would mean each call starts workers again)",
        cfg.alternating_calls
    );
    c2
}

fn report_start(cfg: &Config) -> ColdStart {
    println!();
    println!(
        "[2] pool start: first call (2 tasks, one per worker) in a fresh child process, then a \
         second call; {} children each",
        cfg.cold_reps
    );
    let cold = case_cold_start(cfg.cold_reps);
    println!(
        "  {:<38} {:>10} {:>10} {:>10} {:>14}",
        "", "median", "min", "max", "2nd call med"
    );
    for (i, name) in [
        "joblet: first process call",
        "procspawn: Pool::new(2) + 2 tasks",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "  {:<38} {:>10} {:>10} {:>10} {:>14}",
            name,
            fmt_dur(cold.first[i].median()),
            fmt_dur(cold.first[i].min()),
            fmt_dur(cold.first[i].max()),
            fmt_dur(cold.warm[i].median())
        );
    }
    cold
}

fn report_big(cfg: &Config, pool: &procspawn::Pool) -> BigTimes {
    let mib = (cfg.big_len * std::mem::size_of::<f64>()) as f64 / (1 << 20) as f64;
    let (args_bytes, results_bytes) = cfg.big_bytes();
    println!();
    println!(
        "[3] big data: {} tasks taking {mib:.0} MiB each and returning its sum; {} tasks \
         returning {mib:.0} MiB each ({} runs; procspawn: {WORKERS} spawned ahead for big \
         arguments, {} for big results)",
        cfg.big_args, cfg.big_results, cfg.big_runs, cfg.procspawn_window
    );
    let c3 = case_big(cfg, pool);
    println!(
        "  {:<24} {:>11} {:>11} {:>9} {:>9}   {:>11} {:>11} {:>9} {:>9}",
        "", "args med", "min", "GB/s med", "best", "results med", "min", "GB/s med", "best"
    );
    for (i, name) in BIG.iter().enumerate() {
        let (a, r) = (&c3.args[i], &c3.results[i]);
        println!(
            "  {:<24} {:>11} {:>11} {:>9.2} {:>9.2}   {:>11} {:>11} {:>9.2} {:>9.2}",
            name,
            fmt_dur(a.median()),
            fmt_dur(a.min()),
            gbps(args_bytes, a.median()),
            gbps(args_bytes, a.min()),
            fmt_dur(r.median()),
            fmt_dur(r.min()),
            gbps(results_bytes, r.median()),
            gbps(results_bytes, r.min()),
        );
    }
    println!(
        "  memcpy: copy_from_slice of the same {mib:.0} MiB sources into one pre-touched \
         {mib:.0} MiB destination (the target's reference), and to_vec into fresh, kept Vecs \
         (what every returned result costs the caller: new pages); in-process loop: the task's \
         own work (sum, or make into kept Vecs) on one thread, no transfer"
    );
    let [av, ab, rv, rb] = c3.batches;
    println!(
        "  joblet auto batching (batches, largest): args Vec {av:?}, Buffer {ab:?}; \
         results Vec {rv:?}, Buffer {rb:?}"
    );
    c3
}

impl Config {
    /// Bytes moved by case 3: arguments, results.
    fn big_bytes(&self) -> (usize, usize) {
        let bytes = self.big_len * std::mem::size_of::<f64>();
        (self.big_args * bytes, self.big_results * bytes)
    }
}

fn main() {
    // Workers are this binary: joblet's serve and exit inside worker_hook, procspawn's inside
    // init. Nothing may run before them.
    joblet::worker_hook();
    procspawn::init();

    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2..]);
        return;
    }
    let cfg = Config::from_args(&args);
    println!("joblet process-pool bench");
    println!(
        "  CPUs (joblet::cpu_count): {}; joblet n_jobs = {WORKERS} (Backend::Processes); \
         procspawn::Pool::new({WORKERS})",
        joblet::cpu_count()
    );
    println!(
        "  mode: {}{}{}",
        if cfg.quick {
            "QUICK smoke run (small sizes; numbers are not the benchmark)"
        } else {
            "full"
        },
        cfg.only
            .as_deref()
            .map_or(String::new(), |c| format!("; only case {c:?}")),
        if cfg!(debug_assertions) {
            "; DEBUG BUILD: timings are meaningless, use cargo bench"
        } else {
            ""
        }
    );
    let pool = procspawn::Pool::new(WORKERS).expect("procspawn pool");

    let c1 = cfg.runs_case("tiny").then(|| report_tiny(&cfg, &pool));
    let c2 = cfg
        .runs_case("latency")
        .then(|| report_latency(&cfg, &pool));
    let cold = cfg.runs_case("start").then(|| report_start(&cfg));
    let c3 = cfg.runs_case("big").then(|| report_big(&cfg, &pool));

    // --- summary ------------------------------------------------------------------------
    println!();
    println!("{}", "=".repeat(100));
    println!(
        "SUMMARY   ({} CPUs, {WORKERS} workers each{})",
        joblet::cpu_count(),
        if cfg.quick { ", QUICK run" } else { "" }
    );
    println!("{}", "=".repeat(100));
    let row = |name: &str, j: String, p: String, s: String| {
        println!("{name:<40} {j:>20} {p:>20} {s:>14}");
    };
    row(
        "case (medians)",
        "joblet".into(),
        "procspawn".into(),
        "in-process".into(),
    );
    if let Some(h) = &c1 {
        row(
            "[1] tiny task, per task (wall / n)",
            fmt_ns(h.joblet_ns),
            fmt_ns(h.procspawn_ns),
            fmt_ns(h.seq_ns),
        );
    }
    if let Some(c2) = &c2 {
        let both =
            |s: &Samples| format!("{} / {}", fmt_dur(s.median()), fmt_dur(s.percentile(99.0)));
        row(
            "[2] round trip, median / p99",
            both(&c2.joblet),
            both(&c2.procspawn),
            String::new(),
        );
    }
    if let Some(cold) = &cold {
        row(
            "[2] pool start (first call, 2 workers)",
            fmt_dur(cold.first[0].median()),
            fmt_dur(cold.first[1].median()),
            String::new(),
        );
    }
    let (args_bytes, results_bytes) = cfg.big_bytes();
    if let Some(c3) = &c3 {
        for (title, samples, total) in [
            ("[3] 8 MiB args, GB/s,", &c3.args, args_bytes),
            ("[3] 8 MiB results, GB/s,", &c3.results, results_bytes),
        ] {
            for (kind, j, p) in [
                ("Vec<f64>", JOBLET_VEC, PROCSPAWN_VEC),
                ("Buffer<f64>", JOBLET_BUF, PROCSPAWN_BUF),
            ] {
                row(
                    &format!("{title} {kind}"),
                    format!("{:.2}", gbps(total, samples[j].median())),
                    format!("{:.2}", gbps(total, samples[p].median())),
                    format!("{:.2}", gbps(total, samples[IN_PROCESS].median())),
                );
            }
        }
        println!(
            "[3] memcpy GB/s (1 thread): {:.2} into a pre-touched buffer, {:.2} into fresh Vecs",
            gbps(args_bytes, c3.args[MEMCPY].median()),
            gbps(args_bytes, c3.args[MEMCPY_FRESH].median())
        );
    }

    println!();
    println!(
        "targets{}:",
        if cfg.quick {
            " (QUICK run: sizes too small to judge)"
        } else {
            ""
        }
    );
    if let Some(h) = &c1 {
        println!(
            "  [1] joblet <= 5 µs per tiny task                    : {}  {}",
            fmt_ns(h.joblet_ns),
            verdict(h.joblet_ns <= 5_000.0)
        );
        let speedup = h.procspawn_ns / h.joblet_ns;
        println!(
            "  [1] joblet >= 10x faster per task than procspawn    : {speedup:.0}x  {}{}",
            verdict(speedup >= 10.0),
            if h.procspawn_calls < cfg.tiny_tasks {
                format!(
                    "  (procspawn ran {} of the {} calls)",
                    label(h.procspawn_calls),
                    label(cfg.tiny_tasks)
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(c3) = &c3 {
        let memcpy = gbps(args_bytes, c3.args[MEMCPY].median());
        let fresh = gbps(args_bytes, c3.args[MEMCPY_FRESH].median());
        for (title, samples, total) in [
            ("args   ", &c3.args, args_bytes),
            ("results", &c3.results, results_bytes),
        ] {
            for (kind, j) in [("Vec<f64>   ", JOBLET_VEC), ("Buffer<f64>", JOBLET_BUF)] {
                let g = gbps(total, samples[j].median());
                println!(
                    "  [3] joblet {title} {kind} >= 0.5 x memcpy   : {:.2} x memcpy  {}  \
                     ({:.2} x memcpy into fresh Vecs)",
                    g / memcpy,
                    verdict(g >= 0.5 * memcpy),
                    g / fresh
                );
            }
        }
    }
    println!("  results of every run checked (values and order): yes");
}
