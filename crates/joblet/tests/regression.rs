//! Regression tests, each named after what broke (found in review of the engine).

use joblet::{Backend, Error, Parallel};
use std::sync::mpsc;
use std::time::Duration;

fn threads() -> Parallel {
    Parallel::new().n_jobs(2).backend(Backend::Threads)
}

/// Runs `f` on a thread and fails if it takes longer than 30 s.
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the test finished in time")
}

/// An iterator whose `size_hint` panics after `after` items, or under-reports what is left.
struct Liar {
    next: usize,
    len: usize,
    panic_hint_after: Option<usize>,
    hint_short_by: usize,
}

impl Iterator for Liar {
    type Item = Box<dyn FnOnce() -> usize + Send>;
    fn next(&mut self) -> Option<Self::Item> {
        (self.next < self.len).then(|| {
            let i = self.next;
            self.next += 1;
            Box::new(move || i) as Self::Item
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.panic_hint_after.is_some_and(|n| self.next > n) {
            panic!("size_hint exploded at {}", self.next);
        }
        let left = (self.len - self.next).saturating_sub(self.hint_short_by);
        (left, Some(left))
    }
}

#[test]
fn a_panicking_size_hint_is_an_input_error_not_lost_results() {
    within(|| {
        let input = Liar {
            next: 0,
            len: 1000,
            panic_hint_after: Some(100),
            hint_short_by: 0,
        };
        match threads().run(input) {
            Err(Error::Input { message, .. }) => {
                assert!(message.contains("size_hint exploded"), "{message}")
            }
            other => panic!("expected an input error, got {:?}", other.map(|v| v.len())),
        }
    });
}

#[test]
fn an_under_reporting_size_hint_does_not_end_the_input_early() {
    within(|| {
        for backend in [Backend::Sequential, Backend::Threads] {
            let input = Liar {
                next: 0,
                len: 10,
                panic_hint_after: None,
                hint_short_by: 3,
            };
            let out = Parallel::new()
                .n_jobs(2)
                .backend(backend)
                .run(input)
                .unwrap();
            assert_eq!(out, (0..10).collect::<Vec<_>>(), "{backend}");
        }
    });
}

/// A panic payload whose own destructor panics.
struct NastyPayload;
impl Drop for NastyPayload {
    fn drop(&mut self) {
        panic!("the payload's drop panics too");
    }
}

#[test]
fn a_panic_payload_that_panics_on_drop_still_fails_the_call() {
    within(|| {
        let r = threads().run((0..100).map(|i| {
            move || {
                if i == 50 {
                    std::panic::panic_any(NastyPayload);
                }
                i
            }
        }));
        match r {
            Err(Error::Panicked { index: 50, .. }) => {}
            other => panic!("expected task 50's panic, got {:?}", other.map(|v| v.len())),
        }
    });
}

#[test]
fn an_endless_input_stopped_by_an_error_does_not_reserve_its_size_hint() {
    within(|| {
        let r =
            threads().try_run((0usize..).map(|i| move || if i == 1000 { Err(i) } else { Ok(i) }));
        assert!(
            matches!(
                r,
                Err(Error::Task {
                    index: 1000,
                    source: 1000
                })
            ),
            "{r:?}"
        );
    });
}

#[test]
fn a_slow_input_keeps_automatic_batches_small() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    within(|| {
        // Items arrive every 200 µs and the tasks are instant. Pulling is the batches' real
        // cost: counted, it keeps them at a few items, so results trail the input closely.
        // (Uncounted, batches doubled to hundreds of items, and results lagged 128+ behind.)
        let (tx, rx) = mpsc::channel::<usize>();
        let produced = Arc::new(AtomicUsize::new(0));
        let p = produced.clone();
        std::thread::spawn(move || {
            for i in 0..600 {
                std::thread::sleep(Duration::from_micros(200));
                p.fetch_add(1, Ordering::SeqCst);
                if tx.send(i).is_err() {
                    return;
                }
            }
        });
        let results = threads()
            .iter_unordered(rx.into_iter().map(|i| move || i))
            .unwrap();
        let mut worst_lag = 0;
        for (received, r) in results.enumerate() {
            r.unwrap();
            worst_lag = worst_lag.max(produced.load(Ordering::SeqCst) - (received + 1));
        }
        assert!(
            worst_lag <= 100,
            "results trailed the input by {worst_lag} items"
        );
    });
}

#[test]
fn one_task_on_two_threads_runs_in_the_caller_without_a_nesting_level() {
    within(|| {
        let me = std::thread::current().id();
        let out = threads()
            .run([move || (std::thread::current().id(), joblet::nesting_depth())])
            .unwrap();
        assert_eq!(out, vec![(me, 0)]);
    });
}
