//! What only `Backend::Threads` promises, beyond the behaviour suite (`behaviour.rs`, which
//! runs against it too): it is the default backend, one worker means the caller's thread,
//! several workers mean worker threads, and negative `n_jobs` count from `cpu_count()`.

mod common;

use common::*;
use joblet::{cpu_count, nesting_depth, Backend, Parallel};
use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread::{self, ThreadId};

/// Runs `tasks` tasks on `p`, each waiting (bounded) until `expected` of them run at once;
/// returns the threads they ran on and the most that ever ran at once. Panics if the
/// rendezvous never happened (fewer than `expected` workers).
fn run_together(p: &Parallel, tasks: usize, expected: usize) -> (Vec<ThreadId>, usize) {
    let meet = Rendezvous::new(expected);
    let gauge = Gauge::new();
    let g = gauge.clone();
    let ran = p
        .run((0..tasks).map(move |_| {
            let (meet, g) = (meet.clone(), g.clone());
            move || {
                let _inside = g.enter();
                (meet.wait(MAX_WAIT), thread::current().id())
            }
        }))
        .unwrap();
    assert!(
        ran.iter().all(|&(met, _)| met),
        "{p:?}: {expected} tasks never ran at once"
    );
    (ran.into_iter().map(|(_, t)| t).collect(), gauge.max())
}

#[test]
fn threads_is_the_default_backend_and_parses_joblib_names() {
    assert_eq!(Backend::default(), Backend::Threads);
    assert_eq!("threading".parse::<Backend>().unwrap(), Backend::Threads);
    assert_eq!("threads".parse::<Backend>().unwrap(), Backend::Threads);
    assert_eq!(
        "sequential".parse::<Backend>().unwrap(),
        Backend::Sequential
    );
    assert_eq!("loky".parse::<Backend>().unwrap(), Backend::Processes);
    assert_eq!(
        "dask".parse::<Backend>().unwrap_err().parameter(),
        "backend"
    );
    assert_eq!(Backend::Threads.to_string(), "Threads");
    assert_eq!(Backend::Sequential.to_string(), "Sequential");
}

/// `n_jobs` unset, 1, or negative enough to mean one worker: the tasks run in the caller's
/// thread, adding no nesting level.
#[test]
fn one_worker_runs_in_the_callers_thread() {
    within(LIMIT, || {
        let me = thread::current().id();
        let one_below_cpus = -i64::try_from(cpu_count()).unwrap();
        let configs = [
            Parallel::new(),
            Parallel::new().n_jobs(1),
            Parallel::new().n_jobs(one_below_cpus),
            Parallel::new().n_jobs(-1000),
            Parallel::new().n_jobs(i64::MIN),
        ];
        for p in configs {
            let p = p.backend(Backend::Threads);
            let ran = p
                .run((0..10).map(|_| || (thread::current().id(), nesting_depth())))
                .unwrap();
            assert!(ran.iter().all(|&r| r == (me, 0)), "{p:?}: {ran:?}");
            let ran: Vec<ThreadId> = p
                .iter((0..10).map(|_| || thread::current().id()))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(ran.iter().all(|&t| t == me), "{p:?}: iter");
        }
    });
}

/// With `n_jobs = 2` (and the default backend) the tasks run on two worker threads, never
/// the caller's, at depth 1.
#[test]
fn several_workers_run_off_the_callers_thread() {
    within(LIMIT, || {
        let me = thread::current().id();
        let p = Parallel::new().n_jobs(2).batch_size(1);
        let (threads, most) = run_together(&p, 8, 2);
        let distinct: HashSet<ThreadId> = threads.into_iter().collect();
        assert!(!distinct.contains(&me), "a task ran in the caller's thread");
        assert_eq!(distinct.len(), 2, "two workers, two threads");
        assert_eq!(most, 2);
        let depths = p.run((0..8).map(|_| nesting_depth)).unwrap();
        assert_eq!(depths, vec![1; 8]);
    });
}

/// `-1` is every CPU, `-2` every CPU but one (at least one): that many tasks run at once, and
/// no more.
#[test]
fn negative_n_jobs_count_from_cpu_count() {
    within(LIMIT, || {
        let me = thread::current().id();
        let cpus = cpu_count();
        for (n_jobs, workers) in [(-1i64, cpus), (-2, cpus.saturating_sub(1).max(1))] {
            let p = Parallel::new().n_jobs(n_jobs).batch_size(1);
            if workers == 1 {
                let ran = p.run((0..4).map(|_| || thread::current().id())).unwrap();
                assert!(ran.iter().all(|&t| t == me), "n_jobs {n_jobs}: one worker");
            } else {
                let (_, most) = run_together(&p, 3 * workers, workers);
                assert_eq!(most, workers, "n_jobs {n_jobs} with {cpus} CPUs");
            }
        }
    });
}

/// Worker threads are parked between calls and reused: a second call with the same `n_jobs`
/// runs on the threads of the first (starting threads was most of a small call's cost).
#[test]
fn worker_threads_are_reused_by_the_next_call() {
    within(LIMIT, || {
        let p = Parallel::new()
            .n_jobs(2)
            .backend(Backend::Threads)
            .batch_size(1);
        // Two tasks that wait for each other: they run on two distinct threads.
        let ids = |p: &Parallel| -> HashSet<ThreadId> {
            let meet = Arc::new(Barrier::new(2));
            p.run((0..2).map(|_| {
                let meet = meet.clone();
                move || {
                    meet.wait();
                    thread::current().id()
                }
            }))
            .unwrap()
            .into_iter()
            .collect()
        };
        let first = ids(&p);
        let second = ids(&p);
        assert_eq!(first.len(), 2);
        assert_eq!(first, second, "the second call started new threads");
    });
}

thread_local! {
    static IN_SCOPE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `input_scope` wraps every pull of input: each item is produced inside it, and it runs
/// once per batch, not once per item.
#[test]
fn input_scope_wraps_each_batch_pull() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let scopes = Arc::new(AtomicUsize::new(0));
    let counted = scopes.clone();
    let p = Parallel::new()
        .n_jobs(2)
        .batch_size(10)
        .input_scope(move |pull| {
            counted.fetch_add(1, Ordering::SeqCst);
            IN_SCOPE.with(|s| s.set(true));
            pull();
            IN_SCOPE.with(|s| s.set(false));
        });
    let inside: Vec<bool> = p
        .run((0..100).map(|_| {
            let inside = IN_SCOPE.with(|s| s.get());
            move || inside
        }))
        .unwrap();
    assert_eq!(inside.len(), 100);
    assert!(
        inside.iter().all(|&i| i),
        "an item was pulled outside the scope"
    );
    let n = scopes.load(Ordering::SeqCst);
    // 10 batches of 10, and at most one empty pull per worker to find the end.
    assert!((10..=12).contains(&n), "{n} scopes for 10 batches");
}

/// A scope that forgets to run the pull fails the call instead of ending it early, quietly.
#[test]
fn an_input_scope_that_skips_the_pull_is_an_input_error() {
    let p = Parallel::new().n_jobs(2).input_scope(|_pull| {});
    let err = p.run((0..10).map(|i| move || i)).unwrap_err();
    assert!(
        err.to_string().contains("input scope did not run the pull"),
        "{err}"
    );
}
