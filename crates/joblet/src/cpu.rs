//! How many CPUs this process may use.

/// The number of CPUs this process may run on.
///
/// It respects the CPU affinity mask (`taskset`, `sched_setaffinity`) and cgroup CPU quotas
/// (containers started with `--cpus`), as joblib's `cpu_count` does; it is at least 1.
///
/// ```
/// assert!(joblet::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    // std reads sched_getaffinity and the cgroup v1/v2 quota on Linux, the two limits that
    // joblib honours; a failure to read them means "no limit we know of", so fall back to 1.
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
