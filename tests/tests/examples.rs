//! The example jobs of `examples/` (wordcount in C, JavaScript, Python, WAT) and
//! the Rust plugin `wordcount`, each end to end on a real node: parameters refused
//! with the plugin's own message, a run to success with its check-ins and log, and
//! a long run stopped by the operator and honoured by the guest (the attempt ends
//! `stopped`, not killed).

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use wasmjobs_tests::server::TestServer;
use wasmjobs_tests::{examples_dir, target_dir};

/// Start a node with one wordcount plugin: a bundled one (`wordcount`) or an
/// example (`wordcount-<lang>`).
async fn node_with(name: &str) -> TestServer {
    let example = examples_dir().join(format!("{name}.wasm"));
    let bundled: &[&str] = if example.exists() { &[] } else { &[name] };
    TestServer::start_with(bundled, |cfg| {
        if example.exists() {
            copy(&example, &cfg.plugins_dir.join(format!("{name}.wasm")));
        }
        // JS and Python components take tens of seconds to compile in a debug
        // build: share compiled artifacts between tests and runs.
        cfg.runtime.cache_dir = Some(target_dir().join("test-examples-cache"));
    })
    .await
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

async fn wordcount_end_to_end(name: &str) {
    let s = node_with(name).await;

    // validate: the guest's own messages come back in a 400.
    for (params, named) in [
        (json!({}), "'text'"),
        (json!({"text": 5}), "'text'"),
        (json!({"text": "a", "repeat": 0}), "'repeat'"),
        (json!({"text": "a", "repeat": 2.5}), "'repeat'"),
    ] {
        let (status, body) = s.submit(json!({"name": name, "parameters": params})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name} {params}: {body}");
        assert!(body.to_string().contains(named), "{name} {params}: {body}");
    }

    // A run to success: three passes, a check-in each, the count in the log.
    let text = "the quick\tbrown\nfox \u{2014} jumps  over";
    let id = s
        .submit_ok(json!({"name": name, "parameters": {"text": text, "repeat": 3}}))
        .await;
    let done = s.wait_status(&id, "success").await;
    assert_eq!(done["check_in"], "3/3", "{name}: {done}");
    assert_eq!(done["attempts"][0]["outcome"], "success", "{name}: {done}");
    let (status, log) = s.log(&id).await;
    assert_eq!(status, StatusCode::OK);
    assert!(log.contains("7 words"), "{name}: {log}");

    // A long run, stopped: the guest sees the stop between passes and returns.
    let id = s
        .submit_ok(json!({"name": name, "parameters": {"text": "a b", "repeat": 1_000_000_000}}))
        .await;
    s.wait_status(&id, "running").await;
    // Let it get into its loop (a check-in is only every 10^8 passes).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.action(&id, "stop").await.0, StatusCode::NO_CONTENT);
    let stopped = s.wait_status(&id, "stopped").await;
    assert_eq!(
        stopped["attempts"][0]["outcome"], "stopped",
        "{name} must honour stop, not be killed: {stopped}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_wordcount() {
    wordcount_end_to_end("wordcount").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_wordcount() {
    wordcount_end_to_end("wordcount-c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_wordcount() {
    wordcount_end_to_end("wordcount-js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_wordcount() {
    wordcount_end_to_end("wordcount-py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wat_wordcount() {
    wordcount_end_to_end("wordcount-wat").await;
}

/// A language runtime whose linear memory starts above the memory cap is refused
/// when loaded, with the figures and the setting to raise; never a crash, never a
/// plugin that fails every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_too_big_for_its_memory_cap_is_refused_at_load() {
    use wasmjobs::error::PluginError;
    use wasmjobs::runtime::{Runtime, RuntimeConfig};

    let file = examples_dir().join("wordcount-js.wasm");
    let bytes = std::fs::read(&file).expect("read wordcount-js");
    // Above the host's maximum, the pool refuses it as it compiles; under the
    // maximum but above the plugin's cap, the check after `describe` does.
    let cases = [
        (
            2,
            1,
            "exceeds the limit of 0x200000 bytes",
            "sandbox.max_memory_mib",
        ),
        (64, 2, "above the memory cap of 2.0 MiB", "memory-mib"),
    ];
    for (max_memory_mib, default_memory_mib, figure, setting) in cases {
        let rt = Runtime::new(RuntimeConfig {
            max_memory: max_memory_mib << 20,
            default_memory: default_memory_mib << 20,
            cache_dir: Some(target_dir().join("test-examples-cache")),
            ..wasmjobs_tests::test_config()
        })
        .expect("runtime");
        match rt.load_plugin(&file, bytes.clone()).await {
            Err(PluginError::TooLarge { reason, .. }) => {
                for needle in [figure, setting] {
                    assert!(reason.contains(needle), "{needle:?} not in: {reason}");
                }
            }
            other => panic!("expected TooLarge with a {max_memory_mib} MiB maximum, got {other:?}"),
        }
    }
}
