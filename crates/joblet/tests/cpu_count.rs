//! `cpu_count` and `n_jobs=-1` respect the CPU affinity mask: the test re-runs this test binary
//! under `taskset -c 0` and reads what the child saw.

use std::process::Command;

const CHILD: &str = "JOBLET_TEST_CPU_COUNT_CHILD";

#[test]
fn cpu_count_follows_the_affinity_mask() {
    if std::env::var_os(CHILD).is_some() {
        // The child: report what it sees, and how many workers n_jobs=-1 gives.
        let workers = joblet::Parallel::new()
            .n_jobs(-1)
            .backend(joblet::Backend::Threads)
            .run((0..64).map(|_| || std::thread::current().id()))
            .unwrap()
            .into_iter()
            .collect::<std::collections::HashSet<_>>()
            .len();
        println!("cpus={} workers={workers}", joblet::cpu_count());
        return;
    }
    if Command::new("taskset").arg("-V").output().is_err() {
        eprintln!("taskset is not installed; skipping");
        return;
    }
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cpu_count_follows_the_affinity_mask",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("the test binary runs under taskset");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cpus=1 workers=1"), "child saw: {stdout}");
}
