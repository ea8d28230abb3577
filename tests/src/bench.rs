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
