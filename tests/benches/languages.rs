//! What a job costs in each language: the same `wordcount` job (examples/) in
//! Rust, C, WAT, JavaScript and Python, each through `Runtime::run` (fresh pooled
//! instance per job, no store), one job at a time.
//!
//! Per language: component size, load time (compile + `describe`, no cache),
//! instantiate time and whole-job time (medians), jobs/s on one worker, and the
//! peak linear memory of an instance.
//!
//! Run: `cargo bench -p wasmjobs-tests --bench languages` (env `BENCH_JOBS` sets
//! jobs per language, default 300). Builds the examples first
//! (`scripts/build-examples --all`). Prints a table and writes
//! `target/bench-languages.json`.

use std::path::PathBuf;
use std::time::Instant;

use wasmjobs::runtime::{AttemptSpec, Control, Outcome, Runtime, RuntimeConfig};
use wasmjobs_tests::bench::{env_usize, median, runtime};
use wasmjobs_tests::{RecordingHost, examples_dir, plugins_dir};

const MIB: f64 = 1024.0 * 1024.0;

fn size(bytes: u64) -> String {
    if (bytes as f64) < MIB {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}

struct Row {
    language: &'static str,
    bytes: u64,
    load_ms: f64,
    instantiate_us: f64,
    job_us: f64,
    peak_mib: f64,
}

fn main() {
    let jobs = env_usize("BENCH_JOBS", 300);
    let languages: [(&str, PathBuf); 5] = [
        ("Rust", plugins_dir().join("wordcount.wasm")),
        ("C", examples_dir().join("wordcount-c.wasm")),
        ("WAT", examples_dir().join("wordcount-wat.wasm")),
        ("JavaScript", examples_dir().join("wordcount-js.wasm")),
        ("Python", examples_dir().join("wordcount-py.wasm")),
    ];
    let tokio = runtime();
    let rows: Vec<Row> = tokio.block_on(async {
        let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
        let mut rows = Vec::new();
        for (language, file) in languages {
            let bytes = std::fs::read(&file).expect("read plugin");
            let size = bytes.len() as u64;
            let t = Instant::now();
            let plugin = rt.load_plugin(&file, bytes).await.expect("load plugin");
            let load_ms = t.elapsed().as_secs_f64() * 1e3;
            let spec = AttemptSpec {
                job_id: "bench".into(),
                attempt: 1,
                params: r#"{"text":"the quick brown fox jumps over the lazy dog"}"#.into(),
                ..AttemptSpec::default()
            };
            let host = RecordingHost::new();
            let (mut instantiate, mut job, mut peak) = (Vec::new(), Vec::new(), 0u64);
            for i in 0..jobs + 10 {
                let r = rt.run(&plugin, &spec, host.clone(), Control::new()).await;
                assert_eq!(r.outcome, Outcome::Success, "{language}");
                if i >= 10 {
                    instantiate.push(r.startup.as_secs_f64() * 1e6);
                    job.push(r.duration.as_secs_f64() * 1e6);
                    peak = peak.max(r.peak_memory);
                }
            }
            rows.push(Row {
                language,
                bytes: size,
                load_ms,
                instantiate_us: median(instantiate),
                job_us: median(job),
                peak_mib: peak as f64 / MIB,
            });
        }
        rows
    });

    println!(
        "languages: the wordcount job through Runtime::run, {jobs} jobs each, one at a time, median"
    );
    println!(
        "| language | component | load (compile) | instantiate | whole job | jobs/s (1 worker) | peak memory |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} ms | {:.0} µs | {:.0} µs | {:.0} | {:.1} MiB |",
            r.language,
            size(r.bytes),
            r.load_ms,
            r.instantiate_us,
            r.job_us,
            1e6 / r.job_us,
            r.peak_mib
        );
    }
    let json = serde_json::json!({
        "bench": "languages",
        "jobs": jobs,
        "rows": rows.iter().map(|r| serde_json::json!({
            "language": r.language,
            "component_bytes": r.bytes,
            "load_ms": r.load_ms,
            "instantiate_us": r.instantiate_us,
            "job_us": r.job_us,
            "peak_memory_mib": r.peak_mib,
        })).collect::<Vec<_>>(),
    });
    let out = wasmjobs_tests::target_dir().join("bench-languages.json");
    std::fs::write(&out, serde_json::to_string_pretty(&json).expect("json")).expect("write json");
    println!("wrote {}", out.display());
}
