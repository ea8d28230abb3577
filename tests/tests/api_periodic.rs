//! Periodic jobs: a template that never runs itself, one execution per fire
//! time (never two, even with racing schedulers or a restart), invalid specs
//! refused, and stopping the template ends its schedule.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use wasmjobs_tests::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_fires_executions_until_it_is_stopped() {
    let s = TestServer::start(&["noop"]).await;
    let (status, body) = s
        .submit(
            json!({"name": "noop", "metadata": {"kind": "Periodic", "cron_spec": "* * * * * *"}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["job"]["id"].as_str().expect("id").to_string();
    assert_eq!(body["job"]["status"], "scheduled");
    assert_eq!(body["job"]["cron_spec"], "* * * * * *");

    let template = s
        .wait_until(&id, Duration::from_secs(30), |j| {
            j["executions"].as_array().is_some_and(|e| e.len() >= 3)
        })
        .await;
    assert_eq!(
        template["status"], "scheduled",
        "the template itself never runs"
    );
    assert_eq!(template["attempts"], json!([]));
    assert_eq!(template["multiple_executions"], true);
    let executions: Vec<String> = template["executions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect();
    assert_eq!(
        executions.iter().collect::<HashSet<_>>().len(),
        executions.len()
    );
    for e in &executions {
        let ex = s.wait_status(e, "success").await;
        assert_eq!(ex["upstream_job_id"], id.as_str());
        assert_eq!(ex["kind"], "Generic");
    }

    assert_eq!(s.action(&id, "stop").await.0, StatusCode::NO_CONTENT);
    let stopped = s.wait_status(&id, "stopped").await;
    let (status, body) = s.action(&id, "retry").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a template never runs, so it cannot be retried: {body}"
    );
    let count = stopped["executions"].as_array().map_or(0, Vec::len);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = s.job(&id).await;
    assert_eq!(
        later["executions"].as_array().map_or(0, Vec::len),
        count,
        "a stopped template fires no more"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_schedulers_create_one_execution_per_fire_time() {
    let s = TestServer::start(&["noop"]).await;
    let id = s
        .submit_ok(
            json!({"name": "noop", "metadata": {"kind": "Periodic", "cron_spec": "0 0 0 1 1 *"}}),
        )
        .await;
    let template = s
        .service
        .get(id.parse().expect("uuid"))
        .await
        .expect("template");
    let due = template.run_at.expect("next fire time");
    // Pretend it is that time, on several schedulers at once.
    let mut racers = Vec::new();
    for _ in 0..4 {
        let service = s.service.clone();
        racers.push(tokio::spawn(async move {
            service.fire_periodic(due + 10).await.expect("fire")
        }));
    }
    let mut created = 0;
    for r in racers {
        created += r.await.expect("join");
    }
    assert_eq!(created, 1, "one fire time, one execution");
    let page = s
        .service
        .executions(template.id, None, 10)
        .await
        .expect("executions");
    assert_eq!(page.len(), 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_cron_specs_are_refused_by_name() {
    let s = TestServer::start(&["noop"]).await;
    for spec in [
        "*/0 * * * * *",
        "1/0 * * * * *",
        "* * * * *",
        "junk",
        "61 * * * * *",
    ] {
        let (status, body) = s
            .submit(json!({"name": "noop", "metadata": {"kind": "Periodic", "cron_spec": spec}}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{spec}: {body}");
        let d = body["description"].as_str().unwrap_or_default();
        assert!(d.contains("cron_spec") && d.contains(spec), "{spec}: {d}");
    }
    let (status, body) = s
        .submit(json!({"name": "noop", "metadata": {"kind": "Periodic"}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = s
        .submit(json!({"name": "noop", "metadata": {"cron_spec": "* * * * * *"}}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a Generic job with a cron spec: {body}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_only_the_latest_missed_fire_time_runs() {
    let s = TestServer::start(&["noop"]).await;
    // Every 2 s, but only on the first day of a month six months away: its first
    // fire time is far off, so only this test fires it, as if it had been down.
    let now = chrono::Utc::now();
    let month = (chrono::Datelike::month0(&now) + 6) % 12 + 1;
    let spec = format!("*/2 * * 1 {month} *");
    let id = s
        .submit_ok(json!({"name": "noop", "metadata": {"kind": "Periodic", "cron_spec": spec}}))
        .await;
    let uuid: uuid::Uuid = id.parse().expect("uuid");
    let due = s
        .service
        .get(uuid)
        .await
        .expect("template")
        .run_at
        .expect("due");
    // Fired 9 s late: due, +2, +4, +6 and +8 s were missed; only +8 s runs.
    let created = s.service.fire_periodic(due + 9_000).await.expect("fire");
    assert_eq!(created, 1, "one execution for five missed fire times");
    let executions = s
        .service
        .executions(uuid, None, 10)
        .await
        .expect("executions");
    assert_eq!(executions.len(), 1);
    assert_eq!(
        executions[0].1.id,
        wasmjobs::service::execution_id(uuid, due + 8_000),
        "the execution is the latest missed fire time's"
    );
    let after = s.service.get(uuid).await.expect("template");
    assert_eq!(
        after.run_at,
        Some(due + 10_000),
        "the schedule resumes after now"
    );
    assert_eq!(s.action(&id, "stop").await.0, StatusCode::NO_CONTENT);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_have_derived_ids_and_none_runs_twice_across_a_restart() {
    let s = TestServer::start(&["noop"]).await;
    let id = s
        .submit_ok(
            json!({"name": "noop", "metadata": {"kind": "Periodic", "cron_spec": "*/1 * * * * *"}}),
        )
        .await;
    let template: uuid::Uuid = id.parse().expect("uuid");
    let started = wasmjobs::job::now_ms() / 1000 * 1000;
    s.wait_until(&id, Duration::from_secs(30), |j| {
        j["executions"].as_array().is_some_and(|e| e.len() >= 2)
    })
    .await;
    // Restart mid-schedule.
    let s = s.restart().await;
    let job = s
        .wait_until(&id, Duration::from_secs(30), |j| {
            j["executions"].as_array().is_some_and(|e| e.len() >= 5)
        })
        .await;
    let ended = wasmjobs::job::now_ms();
    let ids: Vec<uuid::Uuid> = job["executions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().expect("id").parse().expect("uuid"))
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "no fire time ran twice: {ids:?}"
    );
    // Each id is the one derived from the template and a whole-second fire time.
    let candidates: HashSet<uuid::Uuid> = (started..=ended)
        .step_by(1000)
        .map(|t| wasmjobs::service::execution_id(template, t))
        .collect();
    for e in &ids {
        assert!(
            candidates.contains(e),
            "{e} is not derived from (template, fire second)"
        );
    }
    assert_eq!(s.action(&id, "stop").await.0, StatusCode::NO_CONTENT);
    s.shutdown().await;
}
