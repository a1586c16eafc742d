//! The seed example's output is checked: the same code that `cargo run --example seed` runs.

#[path = "../examples/seed.rs"]
mod seed;

#[test]
fn seed_examples_match_serial_results_and_print_them() {
    let out = seed::run_examples();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("example 1: ["), "{out}");
    assert_eq!(lines[0].matches(", ").count(), 9, "ten sums: {out}");
    assert!(
        lines[1].starts_with("example 2: [") && lines[1].contains("inf] (failed: [10])"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("example 3: 10 products of shape (10, 2)"),
        "{out}"
    );
}
