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

/// Durable appends per second, one at a time, as the store's log makes them:
/// `record_len` bytes written into a file grown ahead (so no append changes
/// its metadata), then `sync_file_range` waiting for the device. In a temp
/// dir on the file system the servers' data dirs use. One client waiting for
/// each durable answer can get no more than this from the device.
pub fn sync_floor(n: usize, record_len: usize) -> f64 {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("log"))
        .expect("log file");
    let record = vec![7u8; record_len];
    let len = (n * record_len) as u64;
    // Written out and synced first, as the log grows its file ahead of its
    // records: the timed appends overwrite allocated blocks.
    for at in (0..len).step_by(record_len) {
        file.write_all_at(&record, at).expect("grow");
    }
    file.sync_all().expect("sync");
    let started = std::time::Instant::now();
    for i in 0..n {
        let at = (i * record_len) as u64;
        file.write_all_at(&record, at).expect("append");
        sync_range(&file, at, record_len as u64);
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The log's own wait for the device (`host/src/store/sled/wal.rs`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn sync_range(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain system call on a descriptor `file` keeps open for its
    // duration; it reads and writes none of this process's memory.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, flags) };
    assert_eq!(
        rc,
        0,
        "sync_file_range: {}",
        std::io::Error::last_os_error()
    );
}

#[cfg(not(target_os = "linux"))]
fn sync_range(file: &std::fs::File, _offset: u64, _len: u64) {
    file.sync_data().expect("sync");
}
