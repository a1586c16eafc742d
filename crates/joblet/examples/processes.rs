//! Tasks in worker processes: a crash in one task is reported and survived.
//!
//! ```text
//! cargo run --release -p joblet --example processes
//! ```

use joblet::{Backend, Error, Parallel};

joblet::remote_fn! {
    /// Sums a vector: big arguments travel to the worker.
    fn sum(values: Vec<f64>) -> f64 { values.iter().sum() }
}

joblet::remote_fn! {
    /// Fails on a negative input, and crashes the whole worker process on 13.
    fn checked_sqrt(x: i64) -> Result<f64, String> {
        if x == 13 {
            std::process::abort();
        }
        if x < 0 { Err(format!("{x} is negative")) } else { Ok((x as f64).sqrt()) }
    }
}

fn main() {
    joblet::worker_hook();
    let p = Parallel::new().n_jobs(2).backend(Backend::Processes);

    let data: Vec<Vec<f64>> = (0..8).map(|i| vec![i as f64; 1000]).collect();
    let sums = p.try_run(data.into_iter().map(sum::task)).expect("sums");
    println!("sums in worker processes: {sums:?}");

    match p.try_run([4, -1, 9].map(checked_sqrt::task)) {
        Err(Error::Task { index, source }) => {
            println!("task {index} failed in its worker: {source}")
        }
        other => panic!("expected the task's error, got {other:?}"),
    }
    match p.try_run((10..20).map(checked_sqrt::task)) {
        Err(e @ Error::WorkerDied { .. }) => println!("{e}"),
        other => panic!("expected a dead worker, got {other:?}"),
    }
    let roots = p
        .try_run((0..5).map(checked_sqrt::task))
        .expect("the pool heals");
    println!("after the crash, the next call works: {roots:?}");
}
