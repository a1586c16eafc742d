//! The behaviour suite: what every backend must do, written once over a [`Suite`] (a
//! `fn(n_jobs) -> Parallel` factory) and instantiated per backend by `backend_suite!` at the
//! bottom of this file. A new backend gets the whole suite with one line there; `concurrent`
//! adds the tests that need two tasks of a call running at the same time.
//!
//! Orderings between tasks and the test are forced with latches, channels and rendezvous, never
//! with sleeps; every wait is bounded (`within`, `MAX_WAIT`), so a broken engine fails the test
//! instead of hanging it.

mod common;

use common::*;
use joblet::{
    delayed, is_cancelled, nesting_depth, Backend, BatchSize, Error, Event, Failure, Parallel,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

/// One `#[test]` per name, calling `crate::suite::<name>` with the module's `SUITE`.
macro_rules! suite_tests {
    ($($(#[$attr:meta])* $test:ident),* $(,)?) => {
        $(
            $(#[$attr])*
            #[test]
            fn $test() {
                crate::suite::$test(SUITE)
            }
        )*
    };
}

/// `backend_suite!(name, backend)` runs the suite against `backend`;
/// `backend_suite!(name, backend, concurrent)` adds the tests that need tasks to run at once.
macro_rules! backend_suite {
    ($name:ident, $backend:expr $(, $concurrent:ident)?) => {
        mod $name {
            use super::*;

            fn parallel(n_jobs: i64) -> Parallel {
                Parallel::new().n_jobs(n_jobs).backend($backend)
            }

            const SUITE: Suite = Suite {
                parallel,
                concurrent: backend_suite!(@flag $($concurrent)?),
            };

            suite_tests!(
                order_is_preserved_under_random_durations,
                the_failing_task_is_named_whatever_the_batching,
                input_is_pulled_at_most_pre_dispatch_batches_ahead,
                the_first_error_stops_dispatch,
                errors_and_panics_carry_the_task_index,
                a_panicking_input_iterator_gives_an_input_error,
                n_jobs_edge_values,
                invalid_batch_size_and_pre_dispatch_are_config_errors,
                a_task_that_overruns_the_timeout_fails_the_call,
                nested_calls_run_sequentially_in_the_task,
                outcomes_collect_every_outcome,
                progress_events_have_consistent_counters,
                dropping_an_iterator_stops_the_call,
                iter_on_an_endless_input_runs_in_bounded_memory,
                a_parallel_serves_many_calls,
                map_and_try_map,
                delayed_takes_zero_one_or_three_arguments,
                empty_input_gives_empty_results,
                outside_a_task_nothing_is_cancelled_or_nested,
                borrowed_input_is_released_before_the_call_returns,
                pre_dispatch_accepts_any_positive_count,
                huge_n_jobs_neither_panics_nor_blames_pre_dispatch,
            );

            $(backend_suite!(@$concurrent);)?
        }
    };
    (@flag) => { false };
    (@flag concurrent) => { true };
    (@concurrent) => {
        suite_tests!(
            unordered_yields_fast_results_before_a_slow_one,
            a_failing_call_returns_while_another_task_still_runs,
            a_timeout_names_the_stuck_task_and_cancels_it,
            dropping_an_iterator_cancels_running_tasks,
            n_jobs_tasks_run_at_once_and_no_more,
            tasks_of_a_nested_call_see_the_enclosing_call_cancelled,
            a_failing_call_drops_its_borrowed_input_while_tasks_still_run,
            a_streaming_input_yields_each_result_once_its_item_arrived,
        );
    };
}

backend_suite!(sequential, Backend::Sequential);
backend_suite!(threads, Backend::Threads, concurrent);

/// Types a caller moves between threads, and errors that work with `?` and `Box<dyn Error>`.
#[test]
fn api_types_are_send_and_errors_are_std_errors() {
    fn send<T: Send>() {}
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    fn std_error<T: std::error::Error + Send + Sync + 'static>() {}
    send::<joblet::Ordered<Vec<u8>, String>>();
    send::<joblet::Unordered<Vec<u8>, String>>();
    send_sync_clone::<Parallel>();
    std_error::<Error<std::io::Error>>();
    std_error::<Error>();
    std_error::<joblet::ConfigError>();
}

/// The test bodies, one function per behaviour, each taking the backend under test.
mod suite {
    use super::*;

    /// Tasks `0..n` returning their index; task `bad` returns `Err("bad <bad>")`.
    fn failing_at(
        n: usize,
        bad: usize,
    ) -> impl Iterator<Item = impl FnOnce() -> Result<usize, String> + Send + 'static> + Send + 'static
    {
        (0..n).map(move |i| {
            move || {
                if i == bad {
                    Err(format!("bad {i}"))
                } else {
                    Ok(i)
                }
            }
        })
    }

    /// Tasks `0..n` returning their index; task `bad` panics with `"boom <bad>"`.
    fn panicking_at(
        n: usize,
        bad: usize,
    ) -> impl Iterator<Item = impl FnOnce() -> usize + Send + 'static> + Send + 'static {
        (0..n).map(move |i| {
            move || {
                if i == bad {
                    panic!("boom {i}");
                }
                i
            }
        })
    }

    fn indices(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    fn proptest_runner(cases: u32) -> TestRunner {
        TestRunner::new(ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        })
    }

    /// `run`, `iter` and `iter_unordered` give every result, in input order for the first two,
    /// whatever the task durations, the number of workers and the batch size.
    pub fn order_is_preserved_under_random_durations(s: Suite) {
        within(LIMIT, move || {
            let strategy = (
                prop::collection::vec(0u64..400, 0..32),
                1i64..=4,
                prop::option::of(1usize..5),
            );
            let tasks = |micros: Vec<u64>| {
                micros.into_iter().enumerate().map(|(i, us)| {
                    move || {
                        if us > 0 {
                            thread::sleep(Duration::from_micros(us));
                        }
                        i
                    }
                })
            };
            proptest_runner(24)
                .run(&strategy, |(micros, n_jobs, batch)| {
                    let p = with_batch(s.parallel(n_jobs), batch);
                    let expected = indices(micros.len());
                    prop_assert_eq!(&p.run(tasks(micros.clone())).unwrap(), &expected);
                    let lazily: Vec<usize> = p
                        .iter(tasks(micros.clone()))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    prop_assert_eq!(&lazily, &expected);
                    let mut pairs: Vec<(usize, usize)> = p
                        .iter_unordered(tasks(micros.clone()))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    prop_assert!(pairs.iter().all(|(i, v)| i == v), "{:?}", pairs);
                    pairs.sort_unstable();
                    let got: Vec<usize> = pairs.into_iter().map(|(i, _)| i).collect();
                    prop_assert_eq!(got, expected);
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{e}"));
        });
    }

    /// Whatever the size of the call, the workers and the batching, an `Err` or a panic is
    /// reported with the index of the task that raised it.
    pub fn the_failing_task_is_named_whatever_the_batching(s: Suite) {
        within(LIMIT, move || {
            let strategy = (1usize..40)
                .prop_flat_map(|n| (Just(n), 0..n, 1i64..=4, prop::option::of(1usize..6)));
            proptest_runner(24)
                .run(&strategy, |(n, bad, n_jobs, batch)| {
                    let p = with_batch(s.parallel(n_jobs), batch);
                    match p.try_run(failing_at(n, bad)) {
                        Err(Error::Task { index, source }) => {
                            prop_assert_eq!(index, bad);
                            prop_assert_eq!(source, format!("bad {bad}"));
                        }
                        other => return Err(TestCaseError::fail(format!("{other:?}"))),
                    }
                    match p.run(panicking_at(n, bad)) {
                        Err(Error::Panicked { index, message }) => {
                            prop_assert_eq!(index, bad);
                            prop_assert_eq!(message, format!("boom {bad}"));
                        }
                        other => return Err(TestCaseError::fail(format!("{other:?}"))),
                    }
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{e}"));
        });
    }

    /// The input is pulled lazily: consuming `iter` (or `iter_unordered`) one result at a time
    /// with `batch_size(b)` and `pre_dispatch(k)`, the items pulled from the input never exceed
    /// what the dispatch window allows, and (with workers) the window is really used.
    ///
    /// The exact bound, from `scheduler/feed.rs` and `deliver.rs`: a batch holds its window slot
    /// until the caller asks for a value after the batch's last one, so after `c` results
    /// `(c - 1) / b` batches have been freed (none at `c = 0`) and at most `k` more can be
    /// dispatched; with a fixed batch size a dispatch pulls exactly `b` items (the feed only
    /// looks ahead with automatic batching). Pulled items <= `((max(c, 1) - 1) / b + k) * b`.
    /// In the caller's thread (no workers) the input is pulled only when a batch's values are
    /// needed: exactly `ceil(c / b) * b`.
    pub fn input_is_pulled_at_most_pre_dispatch_batches_ahead(s: Suite) {
        within(LIMIT, move || {
            // A multiple of every batch size below, so that all batches have the same size.
            const N: usize = 60;
            for (b, k) in [(1usize, 1usize), (1, 3), (3, 2), (4, 5)] {
                for unordered in [false, true] {
                    let case = format!("batch_size {b}, pre_dispatch {k}, unordered {unordered}");
                    let (input, probe) = counted((0..N).map(|i| move || i));
                    let p = s.parallel(2).batch_size(b).pre_dispatch(k);
                    let mut results: Box<dyn Iterator<Item = usize>> = if unordered {
                        Box::new(p.iter_unordered(input).unwrap().map(|r| r.unwrap().1))
                    } else {
                        Box::new(p.iter(input).unwrap().map(Result::unwrap))
                    };
                    let bound = |c: usize| N.min(((c.max(1) - 1) / b + k) * b);
                    let check = |c: usize| {
                        let pulled = probe.pulled();
                        assert!(
                            pulled <= bound(c),
                            "{case}: {pulled} items pulled after {c} results, at most {} allowed",
                            bound(c)
                        );
                        if s.concurrent {
                            // The workers fill the window up to the bound, and stop there.
                            assert!(
                                wait_until(MAX_WAIT, || probe.pulled() >= bound(c)),
                                "{case}: the window was never filled after {c} results: {} pulled",
                                probe.pulled()
                            );
                            assert_eq!(probe.pulled(), bound(c), "{case}: after {c} results");
                        } else {
                            assert_eq!(pulled, N.min(c.div_ceil(b) * b), "{case}: after {c}");
                        }
                    };
                    check(0);
                    let mut got = Vec::new();
                    for c in 1..=N {
                        let v = results.next();
                        got.push(
                            v.unwrap_or_else(|| panic!("{case}: ended after {} results", c - 1)),
                        );
                        check(c);
                    }
                    assert!(results.next().is_none(), "{case}: more than {N} results");
                    if unordered {
                        got.sort_unstable();
                    }
                    assert_eq!(got, indices(N), "{case}");
                }
            }
        });
    }

    /// With many tasks and a failure at index `K`, only a window's worth of tasks beyond the
    /// failure is ever dispatched, and the call reports the failure.
    pub fn the_first_error_stops_dispatch(s: Suite) {
        within(LIMIT, move || {
            const N: usize = 10_000;
            const K: usize = 20;
            const WINDOW: usize = 4;
            let started = Arc::new(AtomicUsize::new(0));
            let st = started.clone();
            let (input, probe) = counted((0..N).map(move |i| {
                let st = st.clone();
                move || {
                    st.fetch_add(1, Ordering::SeqCst);
                    if i == K {
                        Err(format!("bad {i}"))
                    } else {
                        Ok(i)
                    }
                }
            }));
            let r = s
                .parallel(2)
                .batch_size(1)
                .pre_dispatch(WINDOW)
                .try_run(input);
            match r {
                Err(Error::Task { index, source }) => {
                    assert_eq!((index, source.as_str()), (K, "bad 20"))
                }
                other => panic!("expected the failure of task {K}, got {other:?}"),
            }
            // Once the input is dropped, every worker has let go of the call: the counts are final.
            assert!(
                probe.wait_dropped(MAX_WAIT),
                "the call never released its input"
            );
            // Batches 0..K can all have been freed when the failure arrives; `WINDOW` more at most
            // were dispatched.
            let (pulled, started) = (probe.pulled(), started.load(Ordering::SeqCst));
            assert!(
                pulled <= K + WINDOW,
                "{pulled} of {N} items pulled after a failure at {K}"
            );
            assert!(
                started <= K + WINDOW,
                "{started} of {N} tasks started after a failure at {K}"
            );
            if !s.concurrent {
                assert_eq!(
                    started,
                    K + 1,
                    "in the caller's thread nothing runs after the failure"
                );
            }
        });
    }

    /// `Error::Task` and `Error::Panicked` carry the index of the failed task, from every entry
    /// point, with batches of one, batches that straddle the failure, and automatic batches.
    /// The lazy iterators yield values in order (or with their indices) until the error, which
    /// ends them.
    pub fn errors_and_panics_carry_the_task_index(s: Suite) {
        within(LIMIT, move || {
            const N: usize = 100;
            const K: usize = 23;
            for batch in [Some(1), Some(7), None] {
                let p = with_batch(s.parallel(3), batch);
                let case = format!("batch_size {batch:?}");

                let err = p.try_run(failing_at(N, K)).unwrap_err();
                assert_eq!(err.index(), Some(K), "{case}");
                assert_eq!(err.to_string(), "task 23 failed: bad 23", "{case}");
                assert!(matches!(err, Error::Task { index: K, ref source } if source == "bad 23"));

                match p.run(panicking_at(N, K)) {
                    Err(Error::Panicked { index, message }) => {
                        assert_eq!((index, message.as_str()), (K, "boom 23"), "{case}")
                    }
                    other => panic!("{case}: {other:?}"),
                }
                // A panic payload that is not a string still names the task.
                let r = p.run((0..N).map(|i| {
                    move || {
                        if i == K {
                            std::panic::panic_any(K);
                        }
                        i
                    }
                }));
                assert!(
                    matches!(r, Err(Error::Panicked { index: K, .. })),
                    "{case}: {r:?}"
                );

                let mut it = p.try_iter(failing_at(N, K)).unwrap();
                let mut next = 0;
                loop {
                    match it.next() {
                        Some(Ok(v)) => {
                            assert_eq!(v, next, "{case}: out of order");
                            next += 1;
                        }
                        Some(Err(Error::Task { index, source })) => {
                            assert_eq!((index, source.as_str()), (K, "bad 23"), "{case}");
                            break;
                        }
                        other => panic!("{case}: {other:?}"),
                    }
                }
                assert!(next <= K, "{case}: a value past the failure");
                assert!(
                    it.next().is_none(),
                    "{case}: the iterator goes on after the error"
                );

                let mut it = p.try_iter_unordered(failing_at(N, K)).unwrap();
                let mut seen = Vec::new();
                loop {
                    match it.next() {
                        Some(Ok((i, v))) => {
                            assert_eq!(i, v, "{case}: a value under the wrong index");
                            seen.push(i);
                        }
                        Some(Err(Error::Task { index, .. })) => {
                            assert_eq!(index, K, "{case}");
                            break;
                        }
                        other => panic!("{case}: {other:?}"),
                    }
                }
                assert!(!seen.contains(&K), "{case}");
                let delivered = seen.len();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len(), delivered, "{case}: an index came twice");
                assert!(it.next().is_none(), "{case}");

                let r = p.try_map(0..N, |i| if i == K { Err(i) } else { Ok(i) });
                assert!(
                    matches!(
                        r,
                        Err(Error::Task {
                            index: K,
                            source: K
                        })
                    ),
                    "{case}: {r:?}"
                );
            }
            // A task error that is a std error is the call error's source.
            let r = s.parallel(2).try_run((0..5).map(|i| {
                move || {
                    if i == 3 {
                        Err(std::io::Error::other("disk full"))
                    } else {
                        Ok(i)
                    }
                }
            }));
            let err = r.unwrap_err();
            assert_eq!(err.to_string(), "task 3 failed: disk full");
            let source = std::error::Error::source(&err).expect("the task's error is the source");
            assert_eq!(source.to_string(), "disk full");
        });
    }

    /// An input iterator that panics while producing item `k` fails the call with
    /// `Error::Input { index: k }`; the lazy iterators deliver results before it, in order.
    pub fn a_panicking_input_iterator_gives_an_input_error(s: Suite) {
        within(LIMIT, move || {
            const N: usize = 50;
            let input = |k: usize| {
                (0..N).map(move |i| {
                    if i == k {
                        panic!("no item {i}");
                    }
                    move || i
                })
            };
            for batch in [Some(1), Some(4), None] {
                for k in [0, 13] {
                    let p = with_batch(s.parallel(2), batch);
                    let case = format!("batch_size {batch:?}, panic at item {k}");
                    match p.run(input(k)) {
                        Err(Error::Input { index, message }) => {
                            assert_eq!(index, k, "{case}");
                            assert_eq!(message, format!("no item {k}"), "{case}");
                        }
                        other => panic!("{case}: {other:?}"),
                    }
                    let mut it = p.iter(input(k)).unwrap();
                    let mut next = 0;
                    loop {
                        match it.next() {
                            Some(Ok(v)) => {
                                assert_eq!(v, next, "{case}");
                                next += 1;
                            }
                            Some(Err(Error::Input { index, .. })) => {
                                assert_eq!(index, k, "{case}");
                                break;
                            }
                            other => panic!("{case}: {other:?}"),
                        }
                    }
                    assert!(next <= k, "{case}");
                    assert!(it.next().is_none(), "{case}");
                    let mut it = p.iter_unordered(input(k)).unwrap();
                    let err = loop {
                        match it.next() {
                            Some(Ok((i, _))) => assert!(i < k, "{case}: item {i} cannot exist"),
                            Some(Err(e)) => break e,
                            None => panic!("{case}: the input panic was lost"),
                        }
                    };
                    assert!(
                        matches!(err, Error::Input { index, .. } if index == k),
                        "{case}: {err:?}"
                    );
                    let err = p.outcomes(input(k).map(|t| move || Ok::<_, String>(t())));
                    assert!(
                        matches!(err, Err(Error::Input { index, .. }) if index == k),
                        "{case}: outcomes gave {err:?}"
                    );
                }
            }
        });
    }

    /// The parameter named by the configuration error of a call.
    fn config_parameter<T, E: Debug>(what: &str, r: Result<T, Error<E>>) -> &'static str {
        match r {
            Err(Error::Config(e)) => {
                assert!(e
                    .to_string()
                    .starts_with(&format!("invalid {}", e.parameter())));
                e.parameter()
            }
            Err(other) => panic!("{what}: expected Error::Config, got {other:?}"),
            Ok(_) => panic!("{what}: expected Error::Config, the call was accepted"),
        }
    }

    /// Every entry point of `p` fails with a configuration error naming `parameter`, without
    /// pulling a single item from its input.
    fn assert_config_error(p: &Parallel, parameter: &str) {
        let check = |what: &str, got: &'static str, probe: Probe| {
            assert_eq!(got, parameter, "{what}");
            assert_eq!(probe.pulled(), 0, "{what}: the input was pulled");
        };
        let plain = || counted((0..10usize).map(|i| move || i));
        let fallible = || counted((0..10usize).map(|i| move || Ok::<_, String>(i)));
        let (input, probe) = plain();
        check("run", config_parameter("run", p.run(input)), probe);
        let (input, probe) = fallible();
        check(
            "try_run",
            config_parameter("try_run", p.try_run(input)),
            probe,
        );
        let (input, probe) = fallible();
        check(
            "outcomes",
            config_parameter("outcomes", p.outcomes(input)),
            probe,
        );
        let (input, probe) = plain();
        check("iter", config_parameter("iter", p.iter(input)), probe);
        let (input, probe) = fallible();
        check(
            "try_iter",
            config_parameter("try_iter", p.try_iter(input)),
            probe,
        );
        let (input, probe) = plain();
        let r = p.iter_unordered(input);
        check(
            "iter_unordered",
            config_parameter("iter_unordered", r),
            probe,
        );
        let (input, probe) = fallible();
        let r = p.try_iter_unordered(input);
        check(
            "try_iter_unordered",
            config_parameter("try_iter_unordered", r),
            probe,
        );
        let (input, probe) = counted(0..10usize);
        check("map", config_parameter("map", p.map(input, |x| x)), probe);
        let (input, probe) = counted(0..10usize);
        let r = p.try_map(input, Ok::<_, String>);
        check("try_map", config_parameter("try_map", r), probe);
    }

    /// joblib's `n_jobs`: -1 is every CPU, -2 all but one, anything below is at least one
    /// worker; 0 is a configuration error of every entry point.
    pub fn n_jobs_edge_values(s: Suite) {
        within(LIMIT, move || {
            for n_jobs in [-1, -2, -3, -1000, i64::MIN, 1, 2, 3, 16] {
                let r = s.parallel(n_jobs).run((0..40).map(|i| move || i * 3));
                let expected: Vec<usize> = (0..40).map(|i| i * 3).collect();
                assert_eq!(r.unwrap(), expected, "n_jobs {n_jobs}");
            }
            assert_config_error(&s.parallel(0), "n_jobs");
            // A bad n_jobs is reported whatever else is configured.
            assert_config_error(&s.parallel(0).batch_size(4).pre_dispatch("all"), "n_jobs");
        });
    }

    /// `batch_size(0)` and `pre_dispatch` values that give no batch or do not parse are
    /// configuration errors naming their parameter; the documented forms work.
    pub fn invalid_batch_size_and_pre_dispatch_are_config_errors(s: Suite) {
        within(LIMIT, move || {
            assert_config_error(&s.parallel(2).batch_size(0), "batch_size");
            assert_config_error(&s.parallel(2).batch_size(BatchSize::Fixed(0)), "batch_size");
            for bad in [
                "0",
                "2*jobs",
                "n_jobs - n_jobs",
                "n_jobs / 0",
                "(2",
                "",
                "-1",
                "two",
            ] {
                assert_config_error(&s.parallel(2).pre_dispatch(bad), "pre_dispatch");
            }
            assert_config_error(&s.parallel(2).pre_dispatch(0usize), "pre_dispatch");
            assert_eq!(
                "0".parse::<BatchSize>().unwrap_err().parameter(),
                "batch_size",
                "the textual form of batch_size names its parameter too"
            );
            for good in [
                "all",
                " all ",
                "2*n_jobs",
                "3 * n_jobs + 1",
                "(n_jobs + 1) // 2",
                "1",
            ] {
                let r = s
                    .parallel(2)
                    .batch_size(1)
                    .pre_dispatch(good)
                    .run((0..30).map(|i| move || i));
                assert_eq!(r.unwrap(), indices(30), "pre_dispatch {good:?}");
            }
            for good in [1usize, 2, 1000] {
                let p = s.parallel(2).batch_size(3).pre_dispatch(good);
                let got: Vec<usize> = p
                    .iter((0..30).map(|i| move || i))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                assert_eq!(got, indices(30), "pre_dispatch {good}");
            }
            for size in [1usize, 2, 7, 1000] {
                let r = s
                    .parallel(2)
                    .batch_size(size)
                    .run((0..30).map(|i| move || i));
                assert_eq!(r.unwrap(), indices(30), "batch_size {size}");
            }
            let r = s
                .parallel(2)
                .batch_size("auto".parse::<BatchSize>().unwrap())
                .run((0..30).map(|i| move || i));
            assert_eq!(r.unwrap(), indices(30));
        });
    }

    /// A task that runs past the timeout fails the call with `Error::TimedOut` naming it (the
    /// sequential backend cannot interrupt it and reports it when it returns); the call stops
    /// there. A timeout that no task reaches changes nothing.
    pub fn a_task_that_overruns_the_timeout_fails_the_call(s: Suite) {
        within(LIMIT, move || {
            let timeout = Duration::from_millis(150);
            let started = Arc::new(AtomicUsize::new(0));
            let st = started.clone();
            let r = s
                .parallel(2)
                .batch_size(1)
                .timeout(timeout)
                .run((0..8).map(move |i| {
                    let st = st.clone();
                    move || {
                        st.fetch_add(1, Ordering::SeqCst);
                        if i == 4 {
                            thread::sleep(4 * timeout);
                        }
                        i
                    }
                }));
            let err = r.unwrap_err();
            assert!(
                matches!(err, Error::TimedOut { index: 4, timeout: t } if t == timeout),
                "{err:?}"
            );
            assert_eq!(err.index(), Some(4));
            assert!(
                err.to_string().starts_with("task 4 did not finish"),
                "{err}"
            );
            if !s.concurrent {
                assert_eq!(
                    started.load(Ordering::SeqCst),
                    5,
                    "tasks ran after the overrun"
                );
            }
            // `outcomes` settles task failures, not the call's own: a timeout still fails it.
            let r = s
                .parallel(2)
                .batch_size(1)
                .timeout(timeout)
                .outcomes((0..4).map(move |i| {
                    move || {
                        if i == 2 {
                            thread::sleep(4 * timeout);
                        }
                        Ok::<_, String>(i)
                    }
                }));
            assert!(matches!(r, Err(Error::TimedOut { index: 2, .. })), "{r:?}");
            let r = s
                .parallel(2)
                .timeout(Duration::from_secs(5))
                .run((0..100).map(|i| move || i));
            assert_eq!(r.unwrap(), indices(100));
        });
    }

    /// A `Parallel` call inside a task runs sequentially in the task's thread, whatever its
    /// `n_jobs`: with an outer `n_jobs` of 2 and inner calls of 4, at most 2 inner tasks ever run
    /// at once. `nesting_depth()` is 0 outside any call and 1 inside a task run by a worker; a
    /// call that runs in its caller's thread (the sequential backend, a nested call) adds no
    /// level, as in joblib.
    pub fn nested_calls_run_sequentially_in_the_task(s: Suite) {
        within(LIMIT, move || {
            assert_eq!(nesting_depth(), 0);
            let gauge = Gauge::new();
            let both = Rendezvous::new(2);
            let inner = s.parallel(4).batch_size(1);
            let g = gauge.clone();
            let outer = s.parallel(2).batch_size(1).run((0..4).map(move |_| {
                let (g, both, inner) = (g.clone(), both.clone(), inner.clone());
                move || {
                    let me = thread::current().id();
                    let depth = nesting_depth();
                    // With workers, both outer tasks run their nested calls at the same time.
                    let together = !s.concurrent || both.wait(MAX_WAIT);
                    let ran = inner
                        .run((0..6).map(|_| {
                            let g = g.clone();
                            move || {
                                let _inside = g.enter();
                                spin(Duration::from_micros(300));
                                (nesting_depth(), thread::current().id())
                            }
                        }))
                        .unwrap();
                    let same_thread = ran.iter().all(|&(_, t)| t == me);
                    let depths: Vec<usize> = ran.iter().map(|&(d, _)| d).collect();
                    (depth, together, same_thread, depths, nesting_depth())
                }
            }));
            let in_task = usize::from(s.concurrent);
            for (depth, together, same_thread, inner_depths, after) in outer.unwrap() {
                assert_eq!(depth, in_task, "nesting_depth() inside a task");
                assert!(together, "the two outer tasks never ran at the same time");
                assert!(
                    same_thread,
                    "a nested call ran tasks off its caller's thread"
                );
                assert_eq!(
                    inner_depths,
                    vec![in_task; 6],
                    "nesting_depth() in a nested call"
                );
                assert_eq!(after, in_task, "nesting_depth() after a nested call");
            }
            assert!(gauge.max() <= 2, "{} inner tasks ran at once", gauge.max());
            assert_eq!(nesting_depth(), 0, "after the call");
            let mut it = s.parallel(2).iter((0..5).map(|_| nesting_depth)).unwrap();
            assert_eq!(it.next().unwrap().unwrap(), in_task);
            assert_eq!(nesting_depth(), 0, "between two results of an iterator");
            assert!(it.all(|d| d.unwrap() == in_task));
        });
    }

    /// `outcomes` runs every task and reports each one's value, error or panic in input order.
    pub fn outcomes_collect_every_outcome(s: Suite) {
        within(LIMIT, move || {
            const N: usize = 30;
            for batch in [Some(1), Some(4), None] {
                let started = Arc::new(AtomicUsize::new(0));
                let st = started.clone();
                let got = with_batch(s.parallel(3), batch)
                    .outcomes((0..N).map(move |i| {
                        let st = st.clone();
                        move || {
                            st.fetch_add(1, Ordering::SeqCst);
                            match i % 3 {
                                0 => Ok(i),
                                1 => Err(format!("e{i}")),
                                _ => panic!("p{i}"),
                            }
                        }
                    }))
                    .unwrap();
                let expected: Vec<Result<usize, Failure<String>>> = (0..N)
                    .map(|i| match i % 3 {
                        0 => Ok(i),
                        1 => Err(Failure::Error(format!("e{i}"))),
                        _ => Err(Failure::Panic(format!("p{i}"))),
                    })
                    .collect();
                assert_eq!(got, expected, "batch_size {batch:?}");
                assert_eq!(started.load(Ordering::SeqCst), N, "every task ran");
            }
            assert_eq!(
                Failure::<String>::Panic("x".into()).to_string(),
                "panicked: x"
            );
        });
    }

    /// The progress callback gets Dispatched, Completed, Failed and Finished events, in the
    /// caller's thread, with counters that add up, from every entry point.
    pub fn progress_events_have_consistent_counters(s: Suite) {
        within(LIMIT, move || {
            const N: usize = 50;
            for batch in [Some(1), Some(4), None] {
                let (p, log) = recording(with_batch(s.parallel(2), batch));
                assert_eq!(p.run((0..N).map(|i| move || i)).unwrap(), indices(N));
                check_progress(&take(&log), N, None);

                let got: Vec<usize> = p
                    .iter((0..N).map(|i| move || i))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                assert_eq!(got, indices(N));
                check_progress(&take(&log), N, None);

                let got = p.iter_unordered((0..N).map(|i| move || i)).unwrap().count();
                assert_eq!(got, N);
                check_progress(&take(&log), N, None);

                let r = p.try_run(failing_at(N, 17));
                assert!(matches!(r, Err(Error::Task { index: 17, .. })));
                check_progress(&take(&log), N, Some(17));

                let r = p.run(panicking_at(N, 31));
                assert!(matches!(r, Err(Error::Panicked { index: 31, .. })));
                check_progress(&take(&log), N, Some(31));

                // Task failures that `outcomes` settles are completions, not failures.
                let got = p.outcomes(failing_at(N, 17)).unwrap();
                assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
                check_progress(&take(&log), N, None);

                assert!(p.run(std::iter::empty::<fn() -> u8>()).unwrap().is_empty());
                let events = take(&log);
                assert_eq!(events.len(), 1, "an empty call only finishes: {events:?}");
                let last = events[0].0;
                assert_eq!(
                    (last.event, last.dispatched, last.completed),
                    (Event::Finished, 0, 0)
                );
                assert_eq!(last.total, Some(0));
            }
        });
    }

    /// Dropping an `iter` (or `iter_unordered`) early stops the call: the input is released
    /// without being pulled to the end.
    pub fn dropping_an_iterator_stops_the_call(s: Suite) {
        within(LIMIT, move || {
            const N: usize = 1_000_000;
            const WINDOW: usize = 3;
            for unordered in [false, true] {
                let (input, probe) = counted((0..N).map(|i| move || i));
                let p = s.parallel(2).batch_size(1).pre_dispatch(WINDOW);
                if unordered {
                    let it = p.iter_unordered(input).unwrap();
                    assert_eq!(it.take(5).count(), 5);
                } else {
                    let it = p.iter(input).unwrap();
                    assert_eq!(
                        it.take(5).map(Result::unwrap).collect::<Vec<_>>(),
                        indices(5)
                    );
                }
                assert!(probe.wait_dropped(MAX_WAIT), "the input was never released");
                // As in `input_is_pulled_at_most_pre_dispatch_batches_ahead`, with b = 1, c = 5.
                let pulled = probe.pulled();
                assert!(pulled < 5 + WINDOW, "{pulled} items pulled after 5 results");
            }
            // With automatic batching the batches grow, but the call still stops.
            let (input, probe) = counted((0..N).map(|i| move || i));
            let mut it = s.parallel(2).iter(input).unwrap();
            assert_eq!(it.next().unwrap().unwrap(), 0);
            drop(it);
            assert!(probe.wait_dropped(MAX_WAIT), "the input was never released");
            assert!(
                probe.pulled() < N / 10,
                "{} items pulled for 1 result",
                probe.pulled()
            );
        });
    }

    /// `iter` over an endless input is lazy: `nth` returns, the input pulled stays within the
    /// window, and dropping the iterator ends the call.
    pub fn iter_on_an_endless_input_runs_in_bounded_memory(s: Suite) {
        within(LIMIT, move || {
            const B: usize = 16;
            const WINDOW: usize = 4;
            let (input, probe) = counted((0u64..).map(|i| move || 2 * i));
            let mut it = s
                .parallel(2)
                .batch_size(B)
                .pre_dispatch(WINDOW)
                .iter(input)
                .unwrap();
            assert_eq!(it.nth(10_000).unwrap().unwrap(), 20_000);
            // 10_001 results: (10_001 - 1) / B batches freed, WINDOW more at most (see
            // `input_is_pulled_at_most_pre_dispatch_batches_ahead`).
            let bound = (10_000 / B + WINDOW) * B;
            assert!(
                probe.pulled() <= bound,
                "{} items pulled, at most {bound}",
                probe.pulled()
            );
            drop(it);
            assert!(
                probe.wait_dropped(MAX_WAIT),
                "the endless call never stopped"
            );
            assert!(
                probe.pulled() <= bound,
                "{} items pulled, at most {bound}",
                probe.pulled()
            );

            // joblib's defaults: automatic batches, pre_dispatch "2*n_jobs".
            let (input, probe) = counted((0u64..).map(|i| move || 2 * i));
            let mut it = s.parallel(2).iter(input).unwrap();
            assert_eq!(it.nth(100_000).unwrap().unwrap(), 200_000);
            drop(it);
            assert!(
                probe.wait_dropped(MAX_WAIT),
                "the endless call never stopped"
            );
        });
    }

    /// One `Parallel` serves many calls of every kind, before and after a failed one, and its
    /// clones work too.
    pub fn a_parallel_serves_many_calls(s: Suite) {
        within(LIMIT, move || {
            let (p, log) = recording(s.parallel(2));
            for round in 0..3 {
                let r = p.run((0..20).map(move |i| move || i + round));
                assert_eq!(r.unwrap(), (round..20 + round).collect::<Vec<_>>());
            }
            assert!(matches!(
                p.try_run(failing_at(20, 5)),
                Err(Error::Task { index: 5, .. })
            ));
            assert_eq!(p.run((0..20).map(|i| move || i)).unwrap(), indices(20));
            let got: Vec<usize> = p
                .iter((0..20).map(|i| move || i))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(got, indices(20));
            assert_eq!(
                p.iter_unordered((0..20).map(|i| move || i))
                    .unwrap()
                    .count(),
                20
            );
            assert_eq!(p.map(0..20, |i| i).unwrap(), indices(20));
            assert_eq!(
                p.outcomes(failing_at(3, 9)).unwrap(),
                vec![Ok(0), Ok(1), Ok(2)]
            );
            let clone = p.clone();
            assert_eq!(clone.run((0..20).map(|i| move || i)).unwrap(), indices(20));
            let finished = take(&log)
                .iter()
                .filter(|(e, _)| e.event == Event::Finished)
                .count();
            assert_eq!(finished, 10, "one Finished per call, the clone's included");
        });
    }

    /// `map` applies a function to owned inputs; `try_map` stops at the first error.
    pub fn map_and_try_map(s: Suite) {
        within(LIMIT, move || {
            let p = s.parallel(2);
            let words: Vec<String> = ["a", "bb", "", "dddd"].map(String::from).to_vec();
            assert_eq!(p.map(words, |w: String| w.len()).unwrap(), vec![1, 2, 0, 4]);
            let table = Arc::new(vec![10, 20, 30]);
            assert_eq!(
                p.map(0..3usize, move |i| table[i] + 1).unwrap(),
                vec![11, 21, 31]
            );
            assert_eq!(
                p.map(0..100u64, |x| x * x).unwrap(),
                (0..100u64).map(|x| x * x).collect::<Vec<_>>()
            );
            assert_eq!(
                p.try_map(0..50i32, Ok::<_, String>).unwrap(),
                (0..50).collect::<Vec<_>>()
            );
            match p.try_map(0..50i32, |x| {
                if x == 42 {
                    Err(format!("no {x}"))
                } else {
                    Ok(-x)
                }
            }) {
                Err(Error::Task { index, source }) => {
                    assert_eq!((index, source.as_str()), (42, "no 42"))
                }
                other => panic!("{other:?}"),
            }
            let r = p.map(0..10, |x| {
                if x == 7 {
                    panic!("seven");
                }
                x
            });
            assert!(
                matches!(r, Err(Error::Panicked { index: 7, ref message }) if message == "seven")
            );
            assert!(p.map(Vec::<u8>::new(), |x| x).unwrap().is_empty());
        });
    }

    fn answer() -> u64 {
        42
    }

    fn square(x: u64) -> u64 {
        x * x
    }

    fn describe(name: &'static str, count: usize, scale: f64) -> String {
        format!("{name} {count} x{scale}")
    }

    fn parse(text: String) -> Result<i32, std::num::ParseIntError> {
        text.parse()
    }

    /// `delayed(f, args)` builds a task from a function and a tuple of 0, 1 or 3 arguments.
    pub fn delayed_takes_zero_one_or_three_arguments(s: Suite) {
        within(LIMIT, move || {
            let p = s.parallel(2);
            assert_eq!(
                p.run((0..3).map(|_| delayed(answer, ()))).unwrap(),
                vec![42; 3]
            );
            let r = p.run((0..5u64).map(|x| delayed(square, (x,))));
            assert_eq!(r.unwrap(), vec![0, 1, 4, 9, 16]);
            let r = p.run((0..2usize).map(|i| delayed(describe, ("item", i, 0.5))));
            assert_eq!(r.unwrap(), vec!["item 0 x0.5", "item 1 x0.5"]);
            // Owned arguments move into the task; closures work as the function.
            let r = p.run((0..3usize).map(|i| {
                delayed(
                    |v: Vec<u8>, n: usize, prefix: String| format!("{prefix}{}", v.len() + n),
                    (vec![0; i], i, "n=".to_string()),
                )
            }));
            assert_eq!(r.unwrap(), vec!["n=0", "n=2", "n=4"]);
            let r = p.try_run(["1", "x", "3"].map(|t| delayed(parse, (t.to_string(),))));
            assert!(matches!(r, Err(Error::Task { index: 1, .. })), "{r:?}");
        });
    }

    /// An empty input gives empty results from every entry point.
    pub fn empty_input_gives_empty_results(s: Suite) {
        within(LIMIT, move || {
            let p = s.parallel(2);
            let none = || std::iter::empty::<fn() -> u8>();
            let none_ok = || std::iter::empty::<fn() -> Result<u8, String>>();
            assert!(p.run(none()).unwrap().is_empty());
            assert!(p.try_run(none_ok()).unwrap().is_empty());
            assert!(p.outcomes(none_ok()).unwrap().is_empty());
            assert!(p.iter(none()).unwrap().next().is_none());
            assert!(p.try_iter(none_ok()).unwrap().next().is_none());
            assert!(p.iter_unordered(none()).unwrap().next().is_none());
            assert!(p.try_iter_unordered(none_ok()).unwrap().next().is_none());
        });
    }

    /// Outside a task nothing is cancelled or nested; inside a task of a call that goes well,
    /// nothing is cancelled.
    pub fn outside_a_task_nothing_is_cancelled_or_nested(s: Suite) {
        within(LIMIT, move || {
            assert!(!is_cancelled());
            assert_eq!(nesting_depth(), 0);
            let r = s.parallel(2).run((0..20).map(|_| is_cancelled)).unwrap();
            assert!(r.iter().all(|c| !c), "{r:?}");
            assert!(!is_cancelled());
            assert_eq!(nesting_depth(), 0);
        });
    }

    /// An input iterator that borrows from the caller's stack and records that it was dropped.
    struct Borrowing<'a, T> {
        data: &'a [T],
        next: usize,
        dropped: &'a AtomicBool,
    }

    impl<'a, T> Borrowing<'a, T> {
        fn new(data: &'a [T], dropped: &'a AtomicBool) -> Self {
            dropped.store(false, Ordering::SeqCst);
            Borrowing {
                data,
                next: 0,
                dropped,
            }
        }
    }

    impl<T: Copy> Iterator for Borrowing<'_, T> {
        type Item = T;

        fn next(&mut self) -> Option<T> {
            let item = *self.data.get(self.next)?;
            self.next += 1;
            Some(item)
        }
    }

    impl<T> Drop for Borrowing<'_, T> {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    /// The methods that return a `Vec` accept an input that borrows from the caller, and are
    /// done with it when they return: after success, after a failure, and when the caller's
    /// thread unwinds (here: a progress callback that panics).
    pub fn borrowed_input_is_released_before_the_call_returns(s: Suite) {
        within(LIMIT, move || {
            let data: Vec<u64> = (0..100).collect();
            let doubled: Vec<u64> = data.iter().map(|x| x * 2).collect();
            let p = s.parallel(2);
            assert_eq!(p.run(data.iter().map(|&x| move || x * 2)).unwrap(), doubled);
            let r = p.try_run(data.iter().map(|&x| move || Ok::<_, String>(x * 2)));
            assert_eq!(r.unwrap(), doubled);
            assert_eq!(p.map(data.iter().copied(), |x| x * 2).unwrap(), doubled);
            let r = p.try_map(data.iter().copied(), |x| Ok::<_, String>(x * 2));
            assert_eq!(r.unwrap(), doubled);
            let r = p.outcomes(data.iter().map(|&x| move || Ok::<_, String>(x * 2)));
            assert_eq!(
                r.unwrap(),
                doubled.iter().map(|&x| Ok(x)).collect::<Vec<_>>()
            );

            let dropped = AtomicBool::new(false);
            let r = p.run(Borrowing::new(&data, &dropped).map(|x| move || x * 2));
            assert_eq!(r.unwrap(), doubled);
            assert!(dropped.load(Ordering::SeqCst), "run kept its input");

            let failing = |x: u64| move || if x == 20 { Err(x) } else { Ok(x) };
            let r = p
                .clone()
                .batch_size(1)
                .try_run(Borrowing::new(&data, &dropped).map(failing));
            assert!(
                matches!(
                    r,
                    Err(Error::Task {
                        index: 20,
                        source: 20
                    })
                ),
                "{r:?}"
            );
            assert!(
                dropped.load(Ordering::SeqCst),
                "a failed try_run kept its input"
            );

            let r = p.try_map(Borrowing::new(&data, &dropped), |x| {
                if x == 20 {
                    Err(x)
                } else {
                    Ok(x)
                }
            });
            assert!(matches!(r, Err(Error::Task { index: 20, .. })), "{r:?}");
            assert!(
                dropped.load(Ordering::SeqCst),
                "a failed try_map kept its input"
            );

            let panicky = s.parallel(2).batch_size(1).on_progress(|e| {
                if matches!(e.event, Event::Completed { .. }) {
                    panic!("the progress callback panics");
                }
            });
            let call = std::panic::AssertUnwindSafe(|| {
                panicky.run(Borrowing::new(&data, &dropped).map(|x| move || x))
            });
            assert!(
                std::panic::catch_unwind(call).is_err(),
                "the callback's panic was lost"
            );
            assert!(
                dropped.load(Ordering::SeqCst),
                "an unwinding run kept its input"
            );
        });
    }

    /// Bug: `pre_dispatch` is documented as "a count"; a huge count should mean "no bound",
    /// but `PreDispatch::resolve` casts it with `as i64` and rejects it as negative.
    pub fn pre_dispatch_accepts_any_positive_count(s: Suite) {
        within(LIMIT, move || {
            for count in [usize::MAX, 1 << 63, i64::MAX as usize] {
                let r = s
                    .parallel(2)
                    .pre_dispatch(count)
                    .run((0..10).map(|i| move || i));
                assert_eq!(r.unwrap(), indices(10), "pre_dispatch({count})");
            }
        });
    }

    /// Bug: `n_jobs(i64::MAX)` is "that many workers"; the call must not panic, and must not
    /// blame `pre_dispatch` (left at its default) for the overflow of `2*n_jobs`.
    pub fn huge_n_jobs_neither_panics_nor_blames_pre_dispatch(s: Suite) {
        within(LIMIT, move || {
            let mut problems = Vec::new();
            for p in [
                s.parallel(i64::MAX),
                s.parallel(i64::MAX).pre_dispatch(4usize),
            ] {
                let call = std::panic::AssertUnwindSafe(|| p.run((0..4).map(|i| move || i)));
                match std::panic::catch_unwind(call) {
                    Ok(Ok(v)) if v == indices(4) => {}
                    Ok(Err(Error::Config(e))) if e.parameter() == "n_jobs" => {}
                    Ok(other) => problems.push(format!("{p:?}: {other:?}")),
                    Err(_) => problems.push(format!("{p:?}: the call panicked")),
                }
            }
            assert!(problems.is_empty(), "{problems:#?}");
        });
    }

    // ---- tests that need two tasks of a call running at the same time ----

    /// `iter_unordered` yields results as they finish: five fast results come while a slow
    /// task (blocked until the test has them) is still running.
    pub fn unordered_yields_fast_results_before_a_slow_one(s: Suite) {
        within(LIMIT, move || {
            let latch = Latch::new();
            let l = latch.clone();
            let tasks = (0..6usize).map(move |i| {
                let l = l.clone();
                // The slow task reports whether the test released it (false: it gave up).
                move || i != 0 || l.wait(MAX_WAIT)
            });
            let mut it = s.parallel(2).batch_size(1).iter_unordered(tasks).unwrap();
            let mut fast: Vec<usize> = (0..5).map(|_| it.next().unwrap().unwrap().0).collect();
            fast.sort_unstable();
            assert_eq!(
                fast,
                vec![1, 2, 3, 4, 5],
                "the fast results did not come first"
            );
            latch.open();
            assert_eq!(it.next().unwrap().unwrap(), (0, true));
            assert!(it.next().is_none());
        });
    }

    /// The first error ends the call at once: it returns while another task is still blocked
    /// (that task is released only after the call returned), having dispatched only a window's
    /// worth of the 10_000 tasks; the blocked task sees `is_cancelled()`.
    pub fn a_failing_call_returns_while_another_task_still_runs(s: Suite) {
        within(LIMIT, move || {
            const N: usize = 10_000;
            const K: usize = 20;
            const WINDOW: usize = 4;
            let latch = Latch::new();
            let started = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = mpsc::channel();
            let (l, st) = (latch.clone(), started.clone());
            let (input, probe) = counted((0..N).map(move |i| {
                let (l, st, tx) = (l.clone(), st.clone(), tx.clone());
                move || {
                    st.fetch_add(1, Ordering::SeqCst);
                    if i == 0 {
                        let cancelled = wait_until(MAX_WAIT, is_cancelled);
                        let released = l.wait(MAX_WAIT);
                        tx.send((cancelled, released)).unwrap();
                    }
                    if i == K {
                        Err(format!("bad {i}"))
                    } else {
                        Ok(i)
                    }
                }
            }));
            let r = s
                .parallel(2)
                .batch_size(1)
                .pre_dispatch(WINDOW)
                .try_run(input);
            assert!(
                rx.try_recv().is_err(),
                "the call waited for task 0 to finish"
            );
            match r {
                Err(Error::Task { index, source }) => {
                    assert_eq!((index, source.as_str()), (K, "bad 20"))
                }
                other => panic!("{other:?}"),
            }
            latch.open();
            assert_eq!(
                rx.recv_timeout(MAX_WAIT),
                Ok((true, true)),
                "(saw is_cancelled, released)"
            );
            assert!(
                probe.wait_dropped(MAX_WAIT),
                "the call never released its input"
            );
            // Task 0 holds its window slot throughout: batches 1..K at most were freed.
            let started = started.load(Ordering::SeqCst);
            assert!(
                started < K + WINDOW,
                "{started} of {N} tasks started after a failure at {K}"
            );
            assert!(
                probe.pulled() < K + WINDOW,
                "{} items pulled",
                probe.pulled()
            );
        });
    }

    /// On workers, a task stuck past the timeout fails the call with `Error::TimedOut` naming
    /// it (in the middle of a batch), at once: the task is still running when the call returns,
    /// and sees `is_cancelled()` turn true.
    pub fn a_timeout_names_the_stuck_task_and_cancels_it(s: Suite) {
        within(LIMIT, move || {
            let timeout = Duration::from_millis(100);
            let latch = Latch::new();
            let (tx, rx) = mpsc::channel();
            let l = latch.clone();
            let r = s
                .parallel(2)
                .batch_size(3)
                .timeout(timeout)
                .run((0..8).map(move |i| {
                    let (l, tx) = (l.clone(), tx.clone());
                    move || {
                        if i == 4 {
                            let cancelled = wait_until(MAX_WAIT, is_cancelled);
                            let released = l.wait(MAX_WAIT);
                            tx.send((cancelled, released)).unwrap();
                        }
                        i
                    }
                }));
            assert!(rx.try_recv().is_err(), "the call waited for the stuck task");
            match r {
                Err(Error::TimedOut { index, timeout: t }) => assert_eq!((index, t), (4, timeout)),
                other => panic!("{other:?}"),
            }
            latch.open();
            assert_eq!(
                rx.recv_timeout(MAX_WAIT),
                Ok((true, true)),
                "(saw is_cancelled, released)"
            );
        });
    }

    /// Dropping a result iterator cancels the tasks still running.
    pub fn dropping_an_iterator_cancels_running_tasks(s: Suite) {
        within(LIMIT, move || {
            let (started_tx, started_rx) = mpsc::channel();
            let (tx, rx) = mpsc::channel();
            let mut it = s
                .parallel(2)
                .batch_size(1)
                .iter((0..100usize).map(move |i| {
                    let (started_tx, tx) = (started_tx.clone(), tx.clone());
                    move || {
                        if i == 1 {
                            started_tx.send(()).unwrap();
                            tx.send(wait_until(MAX_WAIT, is_cancelled)).unwrap();
                        }
                        i
                    }
                }))
                .unwrap();
            assert_eq!(it.next().unwrap().unwrap(), 0);
            started_rx
                .recv_timeout(MAX_WAIT)
                .expect("task 1 never started");
            assert!(rx.try_recv().is_err());
            drop(it);
            assert_eq!(
                rx.recv_timeout(MAX_WAIT),
                Ok(true),
                "task 1 never saw is_cancelled()"
            );
        });
    }

    /// `n_jobs = n` runs `n` tasks at once and never more; `-1` runs `cpu_count()` at once.
    pub fn n_jobs_tasks_run_at_once_and_no_more(s: Suite) {
        within(LIMIT, move || {
            for n_jobs in [2i64, 3, -1] {
                let workers = if n_jobs > 0 {
                    n_jobs as usize
                } else {
                    joblet::cpu_count()
                };
                if workers == 1 {
                    continue; // a one-CPU machine: nothing runs at once
                }
                let meet = Rendezvous::new(workers);
                let gauge = Gauge::new();
                let g = gauge.clone();
                let met = s
                    .parallel(n_jobs)
                    .batch_size(1)
                    .run((0..3 * workers).map(move |_| {
                        let (meet, g) = (meet.clone(), g.clone());
                        move || {
                            let _inside = g.enter();
                            meet.wait(MAX_WAIT)
                        }
                    }))
                    .unwrap();
                assert!(
                    met.iter().all(|&m| m),
                    "n_jobs {n_jobs}: {workers} tasks never ran at once"
                );
                assert_eq!(gauge.max(), workers, "n_jobs {n_jobs}: most tasks at once");
            }
        });
    }

    /// The tasks of a call made inside a task see the enclosing call's cancellation: a nested
    /// call's tasks are part of the outer task.
    pub fn tasks_of_a_nested_call_see_the_enclosing_call_cancelled(s: Suite) {
        within(LIMIT, move || {
            let (tx, rx) = mpsc::channel();
            let nested_started = Latch::new();
            let inner = s.parallel(4).batch_size(1);
            let ns = nested_started.clone();
            let r = s.parallel(2).batch_size(1).try_run((0..2).map(move |o| {
                let (tx, inner, ns) = (tx.clone(), inner.clone(), ns.clone());
                move || {
                    if o == 1 {
                        // Fail only once task 0 is inside its nested call.
                        ns.wait(MAX_WAIT);
                        return Err("outer task 1 failed");
                    }
                    let ns = ns.clone();
                    let saw = inner.run((0..3).map(move |_| {
                        let ns = ns.clone();
                        move || {
                            ns.open();
                            wait_until(MAX_WAIT, is_cancelled)
                        }
                    }));
                    tx.send(saw.unwrap()).unwrap();
                    Ok(())
                }
            }));
            assert!(matches!(r, Err(Error::Task { index: 1, .. })), "{r:?}");
            assert_eq!(rx.recv_timeout(2 * MAX_WAIT).unwrap(), vec![true; 3]);
        });
    }

    /// A failing call with a borrowed input returns while a task still runs on a worker, and
    /// has dropped the input by then: no worker can reach the caller's data afterwards.
    pub fn a_failing_call_drops_its_borrowed_input_while_tasks_still_run(s: Suite) {
        within(LIMIT, move || {
            let data: Vec<usize> = (0..10_000).collect();
            let dropped = AtomicBool::new(false);
            let latch = Latch::new();
            let (tx, rx) = mpsc::channel();
            let l = latch.clone();
            let r = s
                .parallel(2)
                .batch_size(1)
                .try_run(Borrowing::new(&data, &dropped).map(move |i| {
                    let (l, tx) = (l.clone(), tx.clone());
                    move || {
                        if i == 0 {
                            tx.send(l.wait(MAX_WAIT)).unwrap();
                        }
                        if i == 20 {
                            Err(i)
                        } else {
                            Ok(i)
                        }
                    }
                }));
            assert!(rx.try_recv().is_err(), "the call waited for task 0");
            assert!(
                dropped.load(Ordering::SeqCst),
                "the call returned, its input still alive"
            );
            assert!(matches!(r, Err(Error::Task { index: 20, .. })), "{r:?}");
            latch.open();
            assert_eq!(
                rx.recv_timeout(MAX_WAIT),
                Ok(true),
                "task 0 was never released"
            );
        });
    }

    /// Bug: an input that produces items over time (a channel) must not hold results back:
    /// each result comes once its item has arrived. Workers pull the input under the feed
    /// lock, and `Feed::release` (called by `Ordered::next` for the previous batch) needs that
    /// lock, so the caller waits until the input yields the next item (here: forever, as the
    /// test sends the next item only after it got the previous result).
    pub fn a_streaming_input_yields_each_result_once_its_item_arrived(s: Suite) {
        within(LIMIT, move || {
            let (tx, rx) = mpsc::channel::<usize>();
            let tasks = rx.into_iter().map(|x| move || x * 10);
            let results = s.parallel(2).batch_size(1).iter(tasks).unwrap();
            let (out_tx, out_rx) = mpsc::channel();
            thread::spawn(move || {
                for r in results {
                    if out_tx.send(r.unwrap()).is_err() {
                        break;
                    }
                }
            });
            for i in 0..5 {
                tx.send(i).unwrap();
                let got = out_rx.recv_timeout(Duration::from_secs(2));
                assert_eq!(got, Ok(i * 10), "the result of item {i} never came");
            }
            drop(tx);
            let end = out_rx.recv_timeout(MAX_WAIT);
            assert_eq!(end, Err(mpsc::RecvTimeoutError::Disconnected));
        });
    }
}
