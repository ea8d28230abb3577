//! The happy paths of the plugin engine on the real bundled plugins: every import,
//! cooperative stop and cancel, retries' inputs, sub-jobs, log capture.

use std::sync::Arc;
use std::time::Duration;

use wasmjobs::runtime::{AttemptSpec, Control, LogLevel, LogStream, Outcome};
use wasmjobs_tests::{RecordingHost, plugin_bytes, registry_with, sha256};

fn spec(params: &str) -> AttemptSpec {
    AttemptSpec {
        job_id: "job-1".into(),
        attempt: 1,
        params: params.into(),
        ..AttemptSpec::default()
    }
}

#[tokio::test]
async fn demo_runs_through_every_import() {
    let (_dir, reg) = registry_with(&["demo"]).await;
    let demo = reg.get("demo").expect("demo loaded");
    let host = RecordingHost::with_properties(&[("email_from", "ops@example.com")]);
    let report = reg
        .runtime()
        .run(
            &demo,
            &spec(r#"{"image":"demo-1","step_ms":5}"#),
            host.clone(),
            Control::new(),
        )
        .await;

    assert_eq!(report.outcome, Outcome::Success);
    assert_eq!(host.checkins(), ["30%", "60%", "100%"]);
    let logger: Vec<(LogLevel, String)> = host
        .lines()
        .into_iter()
        .filter(|l| l.stream == LogStream::Logger)
        .map(|l| (l.level, l.text))
        .collect();
    for (level, text) in [
        (LogLevel::Info, "check in 30%"),
        (LogLevel::Warning, "check in 60%"),
        (LogLevel::Debug, "check in 100%"),
        (LogLevel::Error, "demo error line (not a failure)"),
    ] {
        assert!(
            logger.contains(&(level, text.to_string())),
            "missing {level} {text:?} in {logger:?}"
        );
    }
    // The property came through `get`, and stdout/stderr were captured.
    let stdout = host.texts(LogStream::Stdout);
    assert!(
        stdout.contains(&"Get prop from context: email_from=ops@example.com".to_string()),
        "{stdout:?}"
    );
    assert_eq!(host.texts(LogStream::Stderr), ["I'm close to end"]);
    assert_eq!(report.plugin, "demo");
    assert_eq!(report.plugin_digest, sha256(&plugin_bytes("demo")));
    assert!(report.peak_memory > 0, "peak memory is measured");
    assert!(report.startup <= report.duration);
    assert!(
        report.duration >= Duration::from_millis(15),
        "three 5 ms steps: {:?}",
        report.duration
    );
    assert_eq!(report.fuel_used, None, "fuel is not metered by default");
}

#[tokio::test]
async fn demo_validate_matches_harbor() {
    let (_dir, reg) = registry_with(&["demo"]).await;
    let demo = reg.get("demo").expect("demo");
    let rt = reg.runtime();
    assert_eq!(
        rt.validate(&demo, r#"{"image":"demo-1"}"#)
            .await
            .expect("answer"),
        Ok(())
    );
    let cases = [
        ("{}", "parameters required"),
        (r#"{"tag":"x"}"#, "missing parameter 'image'"),
        (r#"{"image":"prod"}"#, "start with 'demo'"),
        (r#"{"image":7}"#, "'image' must be a string"),
        (r#"[1,2]"#, "must be a JSON object"),
        ("not json", "not valid JSON"),
        (r#"{"image":"demo","step_ms":-1}"#, "'step_ms'"),
    ];
    for (params, expected) in cases {
        let err = rt
            .validate(&demo, params)
            .await
            .expect("answer")
            .expect_err(params);
        assert!(
            err.contains(expected),
            "{params}: {err:?} should contain {expected:?}"
        );
    }
}

async fn stop_demo_after_first_checkin(cancel: bool) -> (Outcome, Arc<RecordingHost>) {
    let (_dir, reg) = registry_with(&["demo"]).await;
    let demo = reg.get("demo").expect("demo");
    let host = RecordingHost::new();
    let control = Control::new();
    let rt = reg.runtime().clone();
    let run = {
        let (host, control) = (host.clone(), control.clone());
        tokio::spawn(async move {
            rt.run(
                &demo,
                &spec(r#"{"image":"demo-1","step_ms":60000}"#),
                host,
                control,
            )
            .await
        })
    };
    while host.checkins().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if cancel {
        control.cancel()
    } else {
        control.stop()
    }
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the job honours the command long before its 60 s step")
        .expect("join");
    (report.outcome, host)
}

#[tokio::test]
async fn demo_stops_cooperatively() {
    let (outcome, host) = stop_demo_after_first_checkin(false).await;
    assert_eq!(outcome, Outcome::Stopped);
    assert_eq!(host.checkins(), ["30%"]);
    assert!(
        host.texts(LogStream::Logger)
            .contains(&"exit for receiving stop signal".to_string())
    );
}

#[tokio::test]
async fn demo_cancels_cooperatively() {
    let (outcome, host) = stop_demo_after_first_checkin(true).await;
    assert_eq!(outcome, Outcome::Cancelled);
    assert!(
        host.texts(LogStream::Logger)
            .contains(&"exit for receiving cancel signal".to_string())
    );
}

#[tokio::test]
async fn sleeper_stops_within_a_step() {
    let (_dir, reg) = registry_with(&["sleeper"]).await;
    let sleeper = reg.get("sleeper").expect("sleeper");
    let control = Control::new();
    let rt = reg.runtime().clone();
    let c = control.clone();
    let run = tokio::spawn(async move {
        rt.run(
            &sleeper,
            &spec(r#"{"ms":600000,"step_ms":10}"#),
            RecordingHost::new(),
            c,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    control.stop();
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("stopped")
        .expect("join");
    assert_eq!(report.outcome, Outcome::Stopped);
}

#[tokio::test]
async fn flaky_fails_until_its_attempt_and_reads_properties() {
    let (_dir, reg) = registry_with(&["flaky"]).await;
    let flaky = reg.get("flaky").expect("flaky");
    let rt = reg.runtime();
    assert_eq!(flaky.info().max_fails, 5);
    for (attempt, ok) in [(1, false), (2, false), (3, true)] {
        let s = AttemptSpec {
            attempt,
            ..spec(r#"{"succeed_on":3}"#)
        };
        let report = rt
            .run(&flaky, &s, RecordingHost::new(), Control::new())
            .await;
        match (ok, &report.outcome) {
            (true, Outcome::Success) => {}
            (false, Outcome::Failed { message }) => {
                assert!(
                    message.contains(&format!("transient failure on attempt {attempt}")),
                    "{message}"
                )
            }
            other => panic!("attempt {attempt}: unexpected {other:?}"),
        }
    }
    // The same threshold from an operator property instead of a parameter.
    let host = RecordingHost::with_properties(&[("flaky.succeed_on", "2")]);
    let s = AttemptSpec {
        attempt: 2,
        ..spec("{}")
    };
    assert_eq!(
        rt.run(&flaky, &s, host, Control::new()).await.outcome,
        Outcome::Success
    );
    // should-retry sees the failure message.
    assert!(
        rt.should_retry(&flaky, "transient failure on attempt 1", 1)
            .await
            .expect("answer")
    );
    assert!(
        !rt.should_retry(&flaky, "fatal failure on attempt 1", 1)
            .await
            .expect("answer")
    );
}

#[tokio::test]
async fn spawner_launches_subjobs_and_handles_refusals() {
    let (_dir, reg) = registry_with(&["spawner"]).await;
    let spawner = reg.get("spawner").expect("spawner");
    let rt = reg.runtime();
    let host = RecordingHost::new();
    let params = r#"{"child":"demo","count":3,"child_params":{"image":"demo-x"}}"#;
    let report = rt
        .run(&spawner, &spec(params), host.clone(), Control::new())
        .await;
    assert_eq!(report.outcome, Outcome::Success);
    let subjobs = host.subjobs.lock().expect("lock").clone();
    assert_eq!(subjobs.len(), 3);
    assert!(
        subjobs
            .iter()
            .all(|r| r.name == "demo" && r.parameters == r#"{"image":"demo-x"}"#)
    );
    assert_eq!(host.checkins(), ["launched 3/3"]);

    // A refused launch comes back to the guest as an error it handles.
    let host = Arc::new(RecordingHost {
        refuse: vec!["nope".into()],
        ..RecordingHost::default()
    });
    let report = rt
        .run(
            &spawner,
            &spec(r#"{"child":"nope","count":2}"#),
            host.clone(),
            Control::new(),
        )
        .await;
    match report.outcome {
        Outcome::Failed { message } => {
            assert!(message.contains("unknown job name 'nope'"), "{message}")
        }
        other => panic!("expected a handled failure, got {other:?}"),
    }
    let params = r#"{"child":"nope","count":2,"tolerate_errors":true}"#;
    let report = rt
        .run(&spawner, &spec(params), host.clone(), Control::new())
        .await;
    assert_eq!(report.outcome, Outcome::Success);
    assert_eq!(
        host.checkins().last().map(String::as_str),
        Some("launched 0/2")
    );
}

#[tokio::test]
async fn chatty_output_is_captured_into_the_log() {
    let (_dir, reg) = registry_with(&["chatty"]).await;
    let chatty = reg.get("chatty").expect("chatty");
    let host = RecordingHost::new();
    let report = reg
        .runtime()
        .run(
            &chatty,
            &spec(r#"{"lines":5}"#),
            host.clone(),
            Control::new(),
        )
        .await;
    assert_eq!(report.outcome, Outcome::Success);
    assert_eq!(
        host.texts(LogStream::Stdout),
        ["hello from stdout", "a partial line without newline"]
    );
    let stderr: Vec<_> = host
        .lines()
        .into_iter()
        .filter(|l| l.stream == LogStream::Stderr)
        .collect();
    assert_eq!(stderr.len(), 1);
    assert_eq!(
        (stderr[0].level, stderr[0].text.as_str()),
        (LogLevel::Error, "hello from stderr")
    );
    let logged = host.texts(LogStream::Logger);
    assert_eq!(
        logged,
        (0..5).map(|i| format!("log line {i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn log_volume_is_bounded_per_attempt() {
    let cfg = wasmjobs::runtime::RuntimeConfig {
        max_log_bytes: 2000,
        ..wasmjobs_tests::test_config()
    };
    let rt = wasmjobs::runtime::Runtime::new(cfg).expect("runtime");
    let (_dir, reg) = wasmjobs_tests::registry_on(rt, &["chatty"]).await;
    let chatty = reg.get("chatty").expect("chatty");
    let host = RecordingHost::new();
    let report = reg
        .runtime()
        .run(
            &chatty,
            &spec(r#"{"lines":100000}"#),
            host.clone(),
            Control::new(),
        )
        .await;
    assert_eq!(
        report.outcome,
        Outcome::Success,
        "a full log never fails the job"
    );
    let kept: usize = host
        .lines()
        .iter()
        .filter(|l| l.stream != LogStream::Host)
        .map(|l| l.text.len())
        .sum();
    assert!(kept <= 2000, "kept {kept} bytes");
    let notes = host.texts(LogStream::Host);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].starts_with("log limit reached:"), "{notes:?}");
    assert!(notes[0].contains("lines ("), "{notes:?}");
}

#[tokio::test]
async fn fuel_is_metered_when_enabled() {
    let cfg = wasmjobs::runtime::RuntimeConfig {
        fuel_metering: true,
        ..wasmjobs_tests::test_config()
    };
    let rt = wasmjobs::runtime::Runtime::new(cfg).expect("runtime");
    let (_dir, reg) = wasmjobs_tests::registry_on(rt, &["noop", "spin"]).await;
    let noop = reg.get("noop").expect("noop");
    let report = reg
        .runtime()
        .run(&noop, &spec("{}"), RecordingHost::new(), Control::new())
        .await;
    assert_eq!(report.outcome, Outcome::Success);
    assert!(
        report.fuel_used.is_some_and(|f| f > 0),
        "{:?}",
        report.fuel_used
    );

    let spin = reg.get("spin").expect("spin");
    let s = AttemptSpec {
        fuel: Some(5_000_000),
        ..spec("{}")
    };
    let report = reg
        .runtime()
        .run(&spin, &s, RecordingHost::new(), Control::new())
        .await;
    assert_eq!(
        report.outcome,
        Outcome::Killed {
            reason: wasmjobs::runtime::KillReason::FuelExhausted
        }
    );
    assert_eq!(report.fuel_used, Some(5_000_000));
}
