//! The plugin directory: loading, digests, broken files, name clashes, hot reload
//! (add, replace, remove) with running jobs keeping their version, and the
//! compiled-artifact cache.

use std::path::Path;
use std::time::Duration;

use tokio::sync::broadcast;
use wasmjobs::runtime::{
    AttemptSpec, Control, FileStatus, Outcome, PluginRegistry, PluginWatcher, RegistryEvent,
    Runtime, RuntimeConfig,
};
use wasmjobs_tests::{
    RecordingHost, install, new_version, plugin_bytes, registry_with, runtime, sha256, test_config,
};

const ALL: &[&str] = &[
    "demo", "noop", "flaky", "sleeper", "spin", "hog", "spawner", "chatty", "crash", "escape",
];

fn spec(params: &str) -> AttemptSpec {
    AttemptSpec {
        job_id: "j".into(),
        attempt: 1,
        params: params.into(),
        ..AttemptSpec::default()
    }
}

/// Write a file the way users are told to: to a dot-file, then rename.
fn publish(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

async fn wait_for(
    rx: &mut broadcast::Receiver<RegistryEvent>,
    what: impl Fn(&RegistryEvent) -> bool,
) -> RegistryEvent {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let e = rx.recv().await.expect("registry events");
            if what(&e) {
                return e;
            }
        }
    })
    .await
    .expect("the registry reacts to the change")
}

fn error_of(reg: &PluginRegistry, file: &str) -> String {
    let entry = reg
        .list()
        .into_iter()
        .find(|e| e.file.ends_with(file))
        .expect("listed");
    match entry.status {
        FileStatus::Invalid { error } => error,
        FileStatus::Ready => panic!("{file} should be invalid"),
    }
}

#[tokio::test]
async fn every_bundled_plugin_loads_with_its_digest_and_info() {
    let (_dir, reg) = registry_with(ALL).await;
    let list = reg.list();
    assert_eq!(list.len(), ALL.len());
    for entry in &list {
        assert_eq!(entry.status, FileStatus::Ready, "{}", entry.file.display());
        let bytes = std::fs::read(&entry.file).expect("read");
        assert_eq!(entry.digest.as_deref(), Some(sha256(&bytes).as_str()));
        let serving = entry.serving.as_ref().expect("serving");
        assert_eq!(serving.digest(), sha256(&bytes));
        assert_eq!(serving.size(), bytes.len() as u64);
    }
    let demo = reg.get("demo").expect("demo");
    assert_eq!(demo.info().max_fails, 3);
    assert_eq!(
        demo.info().memory_cap,
        RuntimeConfig::default().default_memory
    );
    assert_eq!(
        reg.get("noop").expect("noop").info().max_fails,
        4,
        "0 means Harbor's default 4"
    );
    let flaky = reg.get("flaky").expect("flaky");
    assert_eq!(flaky.info().initial_backoff, Duration::from_millis(10));
    assert_eq!(flaky.info().max_backoff, Duration::from_millis(100));
    assert!(reg.get("nope").is_none());
}

#[tokio::test]
async fn broken_files_are_listed_with_a_clear_error_and_the_rest_load() {
    let dir = tempfile::tempdir().expect("dir");
    install(dir.path(), &["demo", "noop"]);
    let noop = plugin_bytes("noop");
    std::fs::write(dir.path().join("garbage.wasm"), b"this is not wasm at all").expect("write");
    std::fs::write(dir.path().join("truncated.wasm"), &noop[..noop.len() / 2]).expect("write");
    std::fs::write(
        dir.path().join("module.wasm"),
        wat::parse_str("(module)").expect("wat"),
    )
    .expect("write");
    let other_world =
        wat::parse_str(r#"(component (core module $m) (core instance (instantiate $m)))"#)
            .expect("wat");
    std::fs::write(dir.path().join("world.wasm"), other_world).expect("write");
    std::fs::write(
        dir.path().join("zz-demo.wasm"),
        new_version(&plugin_bytes("demo"), "copy"),
    )
    .expect("write");
    std::fs::write(dir.path().join("notes.txt"), b"ignored").expect("write");
    std::fs::write(dir.path().join(".hidden.wasm"), b"ignored").expect("write");

    let reg = PluginRegistry::new(runtime(), dir.path()).expect("registry");
    reg.scan().await.expect("scan");

    assert_eq!(
        reg.list().len(),
        7,
        "only visible .wasm files are considered"
    );
    let garbage = error_of(&reg, "garbage.wasm");
    assert!(
        garbage.contains("garbage.wasm") && garbage.contains("not a WebAssembly component"),
        "{garbage}"
    );
    let truncated = error_of(&reg, "truncated.wasm");
    assert!(
        truncated.contains("truncated.wasm") && truncated.contains("not a WebAssembly component"),
        "{truncated}"
    );
    let module = error_of(&reg, "module.wasm");
    assert!(module.contains("core module"), "{module}");
    let world = error_of(&reg, "world.wasm");
    assert!(
        world.contains("world.wasm") && world.contains("does not fit the job plugin world"),
        "{world}"
    );
    let dup = error_of(&reg, "zz-demo.wasm");
    assert!(
        dup.contains("job name `demo` is already provided by") && dup.contains("demo.wasm"),
        "{dup}"
    );

    // The good plugins load and run.
    let demo = reg.get("demo").expect("demo");
    assert_eq!(
        demo.file(),
        dir.path().canonicalize().expect("canon").join("demo.wasm")
    );
    let r = reg
        .runtime()
        .run(
            &reg.get("noop").expect("noop"),
            &spec("{}"),
            RecordingHost::new(),
            Control::new(),
        )
        .await;
    assert_eq!(r.outcome, Outcome::Success);

    // When the owner of a name goes away, the file that clashed with it takes over.
    std::fs::remove_file(dir.path().join("demo.wasm")).expect("rm");
    reg.scan().await.expect("scan");
    let demo = reg.get("demo").expect("demo served by the other file");
    assert!(demo.file().ends_with("zz-demo.wasm"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_loads_replaces_and_removes_while_running_jobs_keep_their_version() {
    let dir = tempfile::tempdir().expect("dir");
    let reg = PluginRegistry::new(runtime(), dir.path()).expect("registry");
    let mut events = reg.subscribe();
    let _watcher = PluginWatcher::start(reg.clone()).expect("watch");

    // A new file is loaded.
    let v1 = plugin_bytes("sleeper");
    publish(dir.path(), "sleeper.wasm", &v1);
    let e = wait_for(
        &mut events,
        |e| matches!(e, RegistryEvent::Loaded { name, .. } if name == "sleeper"),
    )
    .await;
    assert_eq!(
        e,
        RegistryEvent::Loaded {
            name: "sleeper".into(),
            digest: sha256(&v1),
            file: dir
                .path()
                .canonicalize()
                .expect("canon")
                .join("sleeper.wasm"),
        }
    );

    // A job starts on v1; the file is replaced by v2 while it runs.
    let old = reg.get("sleeper").expect("sleeper");
    let host = RecordingHost::new();
    let running = {
        let (rt, host) = (reg.runtime().clone(), host.clone());
        tokio::spawn(async move {
            rt.run(&old, &spec(r#"{"ms":400}"#), host, Control::new())
                .await
        })
    };
    let v2 = new_version(&v1, "v2");
    publish(dir.path(), "sleeper.wasm", &v2);
    wait_for(
        &mut events,
        |e| matches!(e, RegistryEvent::Loaded { digest, .. } if *digest == sha256(&v2)),
    )
    .await;
    assert_eq!(reg.get("sleeper").expect("sleeper").digest(), sha256(&v2));
    let report = running.await.expect("join");
    assert_eq!(report.outcome, Outcome::Success);
    assert_eq!(
        report.plugin_digest,
        sha256(&v1),
        "the running job kept the version it started with"
    );

    // A broken write: listed invalid, the last good version keeps serving.
    publish(dir.path(), "sleeper.wasm", b"\0asm garbage");
    let e = wait_for(&mut events, |e| matches!(e, RegistryEvent::Invalid { .. })).await;
    let RegistryEvent::Invalid { error, .. } = e else {
        unreachable!()
    };
    assert!(error.contains("sleeper.wasm"), "{error}");
    assert_eq!(reg.get("sleeper").expect("last good").digest(), sha256(&v2));
    let entry = reg.list().into_iter().next().expect("listed");
    assert!(matches!(entry.status, FileStatus::Invalid { .. }));
    assert_eq!(entry.serving.expect("serving").digest(), sha256(&v2));

    // A fixed file is picked up again; a plain (non-atomic) copy works too.
    std::fs::write(dir.path().join("sleeper.wasm"), &v1).expect("write");
    wait_for(
        &mut events,
        |e| matches!(e, RegistryEvent::Loaded { digest, .. } if *digest == sha256(&v1)),
    )
    .await;

    // Removal unloads.
    std::fs::remove_file(dir.path().join("sleeper.wasm")).expect("rm");
    wait_for(
        &mut events,
        |e| matches!(e, RegistryEvent::Unloaded { name, .. } if name == "sleeper"),
    )
    .await;
    assert!(reg.get("sleeper").is_none());
    assert!(reg.list().is_empty());
}

#[tokio::test]
async fn compiled_artifacts_are_cached_by_digest() {
    let cache = tempfile::tempdir().expect("cache dir");
    let cfg = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..test_config()
    };
    let cached = |cfg: &RuntimeConfig| Runtime::new(cfg.clone()).expect("runtime");
    let (_d1, reg) = wasmjobs_tests::registry_on(cached(&cfg), &["noop"]).await;
    let entries = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(cache.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let first = entries();
    assert_eq!(first.len(), 1, "{first:?}");
    let hex = sha256(&plugin_bytes("noop"))
        .trim_start_matches("sha256:")
        .to_string();
    assert!(
        first[0].starts_with(&hex) && first[0].ends_with(".cwasm"),
        "{first:?}"
    );
    drop(reg);

    // A second runtime loads from the cache and the plugin works.
    let (_d2, reg) = wasmjobs_tests::registry_on(cached(&cfg), &["noop"]).await;
    let r = reg
        .runtime()
        .run(
            &reg.get("noop").expect("noop"),
            &spec("{}"),
            RecordingHost::new(),
            Control::new(),
        )
        .await;
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(entries(), first);

    // A corrupt entry (overwritten in place while the component it held is still
    // loaded) is dropped and the plugin recompiled.
    std::fs::write(cache.path().join(&first[0]), b"corrupt").expect("corrupt");
    let (_d3, reg) = wasmjobs_tests::registry_on(cached(&cfg), &["noop"]).await;
    assert!(reg.get("noop").is_some());
    assert!(
        std::fs::metadata(cache.path().join(&first[0]))
            .expect("rewritten")
            .len()
            > 100
    );
}
