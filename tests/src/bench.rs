//! Helpers shared by the benchmarks.

/// An integer setting from the environment, or `default`.
pub fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of some measurements.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The runtime benchmarks run on: two worker threads, like the machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in bytes; 0 if absent.
pub fn proc_status_bytes(key: &str) -> u64 {
    pid_status_bytes("self", key)
}

/// A `kB` field of `/proc/<pid>/status`, in bytes; 0 if absent.
pub fn pid_status_bytes(pid: &str, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU seconds this process has used (user and system, every thread), from
/// `getrusage` (the scheduler's own accounting, in microseconds; the clock
/// ticks of `/proc/self/stat` are 10 ms, too coarse for a short phase).
#[allow(unsafe_code)]
pub fn cpu_secs() -> f64 {
    // SAFETY: `getrusage` only writes the struct it is given, which is plain
    // data (all zeros is a valid value).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
