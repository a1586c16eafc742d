//! joblib's `verbose` lines: the test re-runs this binary as a child that makes a verbose call,
//! and reads the child's stderr and stdout.

use std::process::Command;

const CHILD: &str = "JOBLET_TEST_VERBOSE_LEVEL";

fn child_call(level: u32) {
    let out = joblet::Parallel::new()
        .n_jobs(2)
        .batch_size(1)
        .verbose(level)
        .run((0..20).map(|i| move || i))
        .unwrap();
    assert_eq!(out, (0..20).collect::<Vec<_>>());
}

/// Runs the child at `level`; returns its (stdout, stderr).
fn run_child(level: u32) -> (String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "verbose_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, level.to_string())
        .output()
        .expect("the test binary runs");
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn joblet_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("[Parallel(n_jobs=2)]: "))
        .collect()
}

#[test]
fn verbose_child() {
    if let Ok(level) = std::env::var(CHILD) {
        child_call(level.parse().unwrap());
    }
}

#[test]
fn verbose_lines_go_to_stderr_below_50_and_follow_joblib_format() {
    let (stdout, stderr) = run_child(11);
    assert!(joblet_lines(&stdout).is_empty(), "{stdout}");
    let lines = joblet_lines(&stderr);
    assert_eq!(
        lines[0],
        "[Parallel(n_jobs=2)]: Using backend Threads with 2 concurrent workers."
    );
    let last = lines.last().unwrap();
    // joblib's time: " %5.1fs" (a space, then five characters for the seconds).
    assert!(
        last.starts_with("[Parallel(n_jobs=2)]: Done  20 out of  20 | elapsed:    0."),
        "{last}"
    );
    assert!(last.ends_with("s finished"), "{last}");
    // Above level 10, a line per completed batch (20 batches of one task); as in joblib, the
    // last completion prints only the "finished" line.
    let progress = lines.iter().filter(|l| l.contains("Done ")).count();
    assert_eq!(progress, 19 + 1, "{stderr}");
    // Each progress line has one of joblib's two forms, depending on whether the total is
    // known yet when the batch completes.
    for line in &lines[1..lines.len() - 1] {
        let line = line.trim_start_matches("[Parallel(n_jobs=2)]: Done ");
        let known = line.contains(" out of  20 | elapsed: ") && line.contains(" remaining: ");
        let unknown = line.contains(" tasks      | elapsed: ");
        assert!(known ^ unknown, "{line}");
    }
}

#[test]
fn verbose_from_50_goes_to_stdout_and_level_0_is_silent() {
    let (stdout, stderr) = run_child(50);
    assert!(joblet_lines(&stderr).is_empty(), "{stderr}");
    assert!(
        joblet_lines(&stdout).last().unwrap().ends_with("finished"),
        "{stdout}"
    );
    let (stdout, stderr) = run_child(0);
    assert!(joblet_lines(&stdout).is_empty() && joblet_lines(&stderr).is_empty());
}

#[test]
fn the_front_can_name_the_backend() {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    joblet::Parallel::new()
        .n_jobs(2)
        .verbose(10)
        .backend_name("LokyBackend")
        .verbose_to(move |text, _| sink.lock().unwrap().push(text.to_string()))
        .run((0..4).map(|i| move || i))
        .unwrap();
    let lines = lines.lock().unwrap();
    assert_eq!(
        lines[0],
        "[Parallel(n_jobs=2)]: Using backend LokyBackend with 2 concurrent workers.\n"
    );
}

#[test]
fn low_levels_print_fewer_lines() {
    let (_, stderr) = run_child(1);
    let lines = joblet_lines(&stderr);
    assert!(lines.len() < 20, "{stderr}");
    assert!(lines.last().unwrap().ends_with("finished"), "{stderr}");
}

#[cfg(feature = "progress-bar")]
#[test]
fn a_progress_bar_can_be_attached_with_one_line() {
    let out = joblet::Parallel::new()
        .n_jobs(2)
        .progress_bar()
        .run((0..1000).map(|i| move || i))
        .unwrap();
    assert_eq!(out, (0..1000).collect::<Vec<_>>());
}
