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
fn cpu_secs() -> f64 {
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
/// `record_len` bytes appended into a file grown ahead (so no append changes
/// its metadata), each written and waited for by the log's own writer
/// ([`wasmjobs::store::LogWriter`]: `O_DIRECT` where the file system takes
/// it). In a temp dir on the file system the servers' data dirs use. One
/// client waiting for each durable answer can get no more than this from the
/// device.
pub fn sync_floor(n: usize, record_len: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("log");
    // Written out and synced first, as the log grows its file ahead of its
    // records: the timed appends overwrite allocated blocks.
    let len = (n * record_len).next_multiple_of(4096);
    std::fs::write(&path, vec![7u8; len]).expect("grow");
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .expect("sync");
    let mut log = wasmjobs::store::LogWriter::open(&path).expect("open");
    log.start_at(0).expect("start");
    let record = vec![7u8; record_len];
    let started = std::time::Instant::now();
    for _ in 0..n {
        log.extend(&record);
        log.write().expect("append");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A span of work measured two ways: its rate, and the CPU the whole process
/// (every thread) spent on each item of it.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    started: std::time::Instant,
    cpu: f64,
}

impl Meter {
    pub fn start() -> Self {
        Self {
            cpu: cpu_secs(),
            started: std::time::Instant::now(),
        }
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Items per second since the start, and CPU µs per item, for `items`.
    pub fn rate_and_cpu_us(&self, items: usize) -> (f64, f64) {
        let n = items as f64;
        let rate = n / self.started.elapsed().as_secs_f64();
        (rate, 1e6 * (cpu_secs() - self.cpu) / n)
    }
}
