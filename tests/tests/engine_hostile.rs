//! Hostile and buggy guests: each is stopped at its limit with a clear outcome, and
//! the host and the jobs running beside it carry on.
//!
//! Kill delays are printed (run with `--nocapture` to see them); the goal is
//! <= 50 ms past the limit, the assertions allow seconds so a loaded CI machine
//! cannot break them.

use std::time::{Duration, Instant};

use wasmjobs::error::CallError;
use wasmjobs::runtime::{
    AttemptSpec, Control, KillReason, LogStream, Outcome, Runtime, RuntimeConfig,
};
use wasmjobs_tests::{RecordingHost, registry_on, registry_with, test_config};

/// Slack allowed on a kill time in assertions (the measured value is printed).
const MARGIN: Duration = Duration::from_secs(3);

fn spec(params: &str) -> AttemptSpec {
    AttemptSpec {
        job_id: "hostile".into(),
        attempt: 1,
        params: params.into(),
        ..AttemptSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_is_killed_at_its_deadline_while_noops_complete() {
    let (_dir, reg) = registry_with(&["spin", "noop"]).await;
    let (spin, noop) = (
        reg.get("spin").expect("spin"),
        reg.get("noop").expect("noop"),
    );
    let rt = reg.runtime().clone();
    let deadline = Duration::from_millis(500);
    let started = Instant::now();
    let spinning = {
        let rt = rt.clone();
        let s = AttemptSpec {
            deadline: Some(deadline),
            ..spec("{}")
        };
        tokio::spawn(async move {
            rt.run(&spin, &s, RecordingHost::new(), Control::new())
                .await
        })
    };
    // Jobs beside the spinning one still run to completion.
    let mut noops = 0;
    while !spinning.is_finished() && noops < 1000 {
        let r = rt
            .run(&noop, &spec("{}"), RecordingHost::new(), Control::new())
            .await;
        assert_eq!(r.outcome, Outcome::Success);
        noops += 1;
    }
    let report = spinning.await.expect("join");
    let elapsed = started.elapsed();
    assert_eq!(
        report.outcome,
        Outcome::Killed {
            reason: KillReason::Deadline
        }
    );
    println!(
        "spin killed {:?} past its {deadline:?} deadline; {noops} noops ran beside it",
        elapsed - deadline
    );
    assert!(elapsed >= deadline, "killed early: {elapsed:?}");
    assert!(elapsed < deadline + MARGIN, "killed late: {elapsed:?}");
    assert!(noops > 0, "no job ran beside the spinning one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_is_killed_after_its_stop_timeout() {
    let (_dir, reg) = registry_with(&["spin"]).await;
    let spin = reg.get("spin").expect("spin");
    let rt = reg.runtime().clone();
    let host = RecordingHost::new();
    let control = Control::new();
    let stop_timeout = Duration::from_millis(200);
    let run = {
        let (host, control) = (host.clone(), control.clone());
        let s = AttemptSpec {
            stop_timeout: Some(stop_timeout),
            ..spec("{}")
        };
        tokio::spawn(async move { rt.run(&spin, &s, host, control).await })
    };
    while host.checkins().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopped_at = Instant::now();
    control.stop();
    let report = run.await.expect("join");
    let elapsed = stopped_at.elapsed();
    assert_eq!(
        report.outcome,
        Outcome::Killed {
            reason: KillReason::StopTimeout
        }
    );
    println!(
        "spin killed {:?} past its {stop_timeout:?} stop timeout",
        elapsed.saturating_sub(stop_timeout)
    );
    assert!(
        elapsed >= stop_timeout,
        "killed before the stop timeout: {elapsed:?}"
    );
    assert!(elapsed < stop_timeout + MARGIN, "killed late: {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_asleep_in_a_host_call_is_killed_after_its_stop_timeout() {
    let (_dir, reg) = registry_with(&["sleeper"]).await;
    let sleeper = reg.get("sleeper").expect("sleeper");
    let rt = reg.runtime().clone();
    let host = RecordingHost::new();
    let control = Control::new();
    let run = {
        let (host, control) = (host.clone(), control.clone());
        // One 10-minute WASI sleep: the guest cannot poll until it wakes.
        let s = AttemptSpec {
            stop_timeout: Some(Duration::from_millis(100)),
            ..spec(r#"{"ms":600000,"step_ms":600000}"#)
        };
        tokio::spawn(async move { rt.run(&sleeper, &s, host, control).await })
    };
    while host.checkins().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Between its check-in and the sleep the guest polls the command once: a
    // cancel landing there is obeyed (Cancelled). Give it time to be asleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = Instant::now();
    control.cancel();
    let report = tokio::time::timeout(MARGIN * 2, run)
        .await
        .expect("killed in time")
        .expect("join");
    assert_eq!(
        report.outcome,
        Outcome::Killed {
            reason: KillReason::StopTimeout
        }
    );
    assert!(stopped_at.elapsed() >= Duration::from_millis(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hog_stops_at_its_memory_cap_while_a_noop_completes() {
    let (_dir, reg) = registry_with(&["hog", "noop"]).await;
    let (hog, noop) = (reg.get("hog").expect("hog"), reg.get("noop").expect("noop"));
    assert_eq!(
        hog.info().memory_cap,
        64 * 1024 * 1024,
        "hog declares 64 MiB"
    );
    let rt = reg.runtime().clone();
    let host = RecordingHost::new();
    let hogging = {
        let (rt, host) = (rt.clone(), host.clone());
        tokio::spawn(async move { rt.run(&hog, &spec("{}"), host, Control::new()).await })
    };
    let beside = rt
        .run(&noop, &spec("{}"), RecordingHost::new(), Control::new())
        .await;
    assert_eq!(beside.outcome, Outcome::Success);
    let report = hogging.await.expect("join");
    assert_eq!(
        report.outcome,
        Outcome::Killed {
            reason: KillReason::MemoryLimit
        }
    );
    assert!(
        report.peak_memory <= 64 * 1024 * 1024,
        "peak {} over the cap",
        report.peak_memory
    );
    assert!(
        report.peak_memory >= 32 * 1024 * 1024,
        "peak {} too low",
        report.peak_memory
    );
    assert!(
        host.checkins().iter().any(|c| c == "32 MiB"),
        "{:?}",
        host.checkins()
    );
    // The pool slot was returned: the next job runs.
    let after = rt
        .run(&noop, &spec("{}"), RecordingHost::new(), Control::new())
        .await;
    assert_eq!(after.outcome, Outcome::Success);
}

#[tokio::test]
async fn unbounded_recursion_traps() {
    let (_dir, reg) = registry_with(&["hog"]).await;
    let hog = reg.get("hog").expect("hog");
    let report = reg
        .runtime()
        .run(
            &hog,
            &spec(r#"{"stack":true}"#),
            RecordingHost::new(),
            Control::new(),
        )
        .await;
    match report.outcome {
        Outcome::Trapped { message } => {
            // Rust keeps big frames on a shadow stack in linear memory, which runs
            // out (an out-of-bounds access) before wasm's own call stack does.
            let first = message.lines().next().unwrap_or_default();
            assert!(
                first == "wasm trap: call stack exhausted"
                    || first == "wasm trap: out of bounds memory access",
                "{message}"
            );
            assert!(
                message.lines().count() < 20,
                "the message is bounded: {message}"
            );
        }
        other => panic!("expected a stack-overflow trap, got {other:?}"),
    }
}

#[tokio::test]
async fn files_env_and_sockets_are_denied() {
    let (_dir, reg) = registry_with(&["escape"]).await;
    let escape = reg.get("escape").expect("escape");
    let host = RecordingHost::new();
    let report = reg
        .runtime()
        .run(&escape, &spec("{}"), host.clone(), Control::new())
        .await;
    let tried = host.texts(LogStream::Logger);
    assert_eq!(
        report.outcome,
        Outcome::Success,
        "the guest reached outside: {tried:?}"
    );
    assert_eq!(tried.len(), 9, "{tried:?}");
    assert!(tried.iter().all(|l| l.ends_with(": denied")), "{tried:?}");
}

#[tokio::test]
async fn a_panic_in_run_is_a_trap_with_the_message_in_the_log() {
    let (_dir, reg) = registry_with(&["crash"]).await;
    let crash = reg.get("crash").expect("crash");
    let host = RecordingHost::new();
    let report = reg
        .runtime()
        .run(
            &crash,
            &spec(r#"{"panic_in":"run"}"#),
            host.clone(),
            Control::new(),
        )
        .await;
    assert!(
        matches!(report.outcome, Outcome::Trapped { .. }),
        "{:?}",
        report.outcome
    );
    let stderr = host.texts(LogStream::Stderr).join("\n");
    assert!(stderr.contains("run panicked on purpose"), "{stderr}");
}

#[tokio::test]
async fn a_validate_that_traps_is_a_clear_error_and_the_plugin_still_serves() {
    let (_dir, reg) = registry_with(&["crash"]).await;
    let crash = reg.get("crash").expect("crash");
    let rt = reg.runtime();
    let err = rt
        .validate(&crash, r#"{"panic_in":"validate"}"#)
        .await
        .expect_err("trap");
    assert!(
        matches!(
            err,
            CallError::Trapped {
                call: "validate",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("plugin `crash` trapped in `validate`"),
        "{err}"
    );
    assert_eq!(rt.validate(&crash, "{}").await.expect("answer"), Ok(()));
}

/// The validations of one bulk request share an instance and stop at the
/// first job that is not valid (the batch is refused anyway): a plugin that
/// never answers costs one call timeout, not one per job.
#[tokio::test]
async fn validations_of_a_batch_stop_at_a_trap_or_a_timeout() {
    let cfg = RuntimeConfig {
        call_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let (_dir, reg) = registry_on(Runtime::new(cfg).expect("runtime"), &["crash", "spin"]).await;
    let rt = reg.runtime();
    let crash = reg.get("crash").expect("crash");
    let trap = r#"{"panic_in":"validate"}"#;
    let answers = rt.validate_many(&crash, &["{}", "{}", trap, "{}"]).await;
    assert_eq!(answers.len(), 3, "stops at the trap: {answers:?}");
    assert_eq!(answers[0].as_ref().expect("answer"), &Ok(()));
    assert_eq!(answers[1].as_ref().expect("answer"), &Ok(()));
    assert!(
        matches!(
            answers[2],
            Err(CallError::Trapped {
                call: "validate",
                ..
            })
        ),
        "{answers:?}"
    );
    // The next batch gets a fresh instance.
    let answers = rt.validate_many(&crash, &["{}", "{}"]).await;
    assert!(
        answers.iter().all(|a| a.as_ref().is_ok_and(Result::is_ok)),
        "{answers:?}"
    );
    let spin = reg.get("spin").expect("spin");
    let hang = r#"{"in":"validate"}"#;
    let started = Instant::now();
    let answers = rt.validate_many(&spin, &["{}", hang, hang, "{}"]).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers[0].as_ref().is_ok_and(Result::is_ok), "{answers:?}");
    assert!(
        matches!(answers[1], Err(CallError::TimedOut { limit_ms: 300, .. })),
        "{answers:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(300) + MARGIN);
}

/// Memory a `validate` leaves behind on a shared instance cannot fail a valid
/// job: the call that runs out of its cap is retried on a fresh instance.
#[tokio::test]
async fn validations_of_a_batch_are_not_failed_by_memory_earlier_calls_left() {
    let (_dir, reg) = registry_with(&["hog"]).await;
    let hog = reg.get("hog").expect("hog");
    let keep = r#"{"keep_mib":24}"#;
    let answers = reg.runtime().validate_many(&hog, &[keep; 6]).await;
    assert_eq!(answers.len(), 6, "{answers:?}");
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.as_ref().expect("answer"), &Ok(()), "job {i}");
    }
}

#[tokio::test]
async fn a_validate_that_never_returns_times_out() {
    let cfg = RuntimeConfig {
        call_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let (_dir, reg) = registry_on(Runtime::new(cfg).expect("runtime"), &["spin"]).await;
    let spin = reg.get("spin").expect("spin");
    let started = Instant::now();
    let err = reg
        .runtime()
        .validate(&spin, r#"{"in":"validate"}"#)
        .await
        .expect_err("timeout");
    assert!(
        matches!(
            err,
            CallError::TimedOut {
                call: "validate",
                limit_ms: 300,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(300) + MARGIN);
}
