//! The three examples of the seed document ("How to extract output from a joblib function?"),
//! in Rust: each runs in parallel, is checked against a plain serial loop, and is printed.
//!
//! ```text
//! cargo run --release -p joblet --example seed
//! ```

use joblet::{delayed, Backend, Failure, Parallel};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write;

/// Example 1: a "computationally intensive" task, the sum of the squares of an array.
fn sum_of_squares(x: ndarray::Array1<f64>) -> f64 {
    x.mapv(|v| v * v).sum()
}

/// Example 2: 1/x, failing on zero instead of returning infinity.
#[derive(Debug, Clone, PartialEq)]
struct DivisionByZero;

fn reciprocal(x: f64) -> Result<f64, DivisionByZero> {
    if x == 0.0 {
        Err(DivisionByZero)
    } else {
        Ok(1.0 / x)
    }
}

/// Example 3: a matrix product.
fn dot(x: Array2<f64>, y: Array2<f64>) -> Array2<f64> {
    x.dot(&y)
}

/// Runs the three examples and returns what they print. Panics if a parallel result differs
/// from the serial one.
pub fn run_examples() -> String {
    let mut out = String::new();
    let mut rng = StdRng::seed_from_u64(2025);

    // Example 1: ten arrays of 1000 values, n_jobs=4, results in input order.
    let data: Vec<ndarray::Array1<f64>> = (0..10)
        .map(|_| (0..1000).map(|_| rng.gen::<f64>()).collect())
        .collect();
    let serial: Vec<f64> = data.iter().cloned().map(sum_of_squares).collect();
    let results = Parallel::new()
        .n_jobs(4)
        .run(data.into_iter().map(|x| delayed(sum_of_squares, (x,))))
        .expect("example 1 runs");
    assert_eq!(
        results, serial,
        "example 1: parallel and serial results differ"
    );
    assert_eq!(results.len(), 10);
    writeln!(out, "example 1: {results:.4?}").unwrap();

    // Example 2: 1/x over ten random values and a zero, on threads. Every outcome is kept, so
    // the zero's failure does not cost the other results; it becomes infinity, as in the seed.
    let mut data: Vec<f64> = (0..10).map(|_| rng.gen::<f64>()).collect();
    data.push(0.0);
    let serial: Vec<f64> = data
        .iter()
        .map(|&x| reciprocal(x).unwrap_or(f64::INFINITY))
        .collect();
    let outcomes = Parallel::new()
        .n_jobs(4)
        .backend(Backend::Threads)
        .outcomes(data.iter().map(|&x| delayed(reciprocal, (x,))))
        .expect("example 2 runs");
    let failed: Vec<usize> = (0..outcomes.len())
        .filter(|&i| outcomes[i].is_err())
        .collect();
    let results: Vec<f64> = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(v) => v,
            Err(Failure::Error(DivisionByZero)) => f64::INFINITY,
            Err(other) => panic!("example 2: unexpected failure {other:?}"),
        })
        .collect();
    assert_eq!(
        results, serial,
        "example 2: parallel and serial results differ"
    );
    assert_eq!(failed, vec![10], "example 2: only the zero fails");
    writeln!(out, "example 2: {results:.4?} (failed: {failed:?})").unwrap();

    // Example 3: ten products of a 10x5 and a 5x2 matrix, n_jobs=2.
    let random = |rng: &mut StdRng, r, c| Array2::from_shape_fn((r, c), |_| rng.gen::<f64>());
    let xs: Vec<Array2<f64>> = (0..10).map(|_| random(&mut rng, 10, 5)).collect();
    let ys: Vec<Array2<f64>> = (0..10).map(|_| random(&mut rng, 5, 2)).collect();
    let serial: Vec<Array2<f64>> = xs.iter().zip(&ys).map(|(x, y)| x.dot(y)).collect();
    let results = Parallel::new()
        .n_jobs(2)
        .run(xs.into_iter().zip(ys).map(|(x, y)| delayed(dot, (x, y))))
        .expect("example 3 runs");
    assert_eq!(
        results, serial,
        "example 3: parallel and serial results differ"
    );
    assert!(results.iter().all(|r| r.dim() == (10, 2)));
    writeln!(
        out,
        "example 3: {} products of shape {:?}; first:\n{:.4}",
        results.len(),
        results[0].dim(),
        results[0]
    )
    .unwrap();
    out
}

#[allow(dead_code)] // the seed test includes this file for `run_examples` alone
fn main() {
    print!("{}", run_examples());
    println!("all three examples match their serial results");
}
