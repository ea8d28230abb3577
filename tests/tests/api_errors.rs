//! Bad input and auth: each gets the contract's status and a JSON body naming the
//! problem, and leaves nothing behind.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wasmjobs_tests::server::{SECRET, TestServer};

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, mentions: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], expected.as_u16(), "{body}");
    assert!(
        body["err"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    let d = body["description"].as_str().unwrap_or_default();
    assert!(
        d.contains(mentions),
        "description {d:?} should mention {mentions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_refused_with_a_named_reason_and_store_nothing() {
    let s = TestServer::start_with(&["demo", "crash"], |c| c.max_body_bytes = 4096).await;
    let post = |body: String| {
        s.authed(Method::POST, "/api/v1/jobs")
            .header("Content-Type", "application/json")
            .body(body)
    };
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, "malformed JSON"),
        (json!({"job": {"name": 5}}).to_string(), StatusCode::BAD_REQUEST, "job.name"),
        (json!({"job": {"name": "nope"}}).to_string(), StatusCode::BAD_REQUEST, "unknown job name \"nope\""),
        (json!({"job": {"name": "demo", "parameters": {"image": "demo"}, "metadata": {"kind": "Weekly"}}}).to_string(), StatusCode::BAD_REQUEST, "job.metadata.kind"),
        (json!({"job": {"name": "demo", "parameters": {"image": "demo"}, "metadata": {"kind": "Scheduled"}}}).to_string(), StatusCode::BAD_REQUEST, "schedule_delay"),
        (json!({"job": {"name": "demo", "parameters": {"image": "demo"}, "metadata": {"kind": "Scheduled", "schedule_delay": 0}}}).to_string(), StatusCode::BAD_REQUEST, "schedule_delay"),
        (json!({"job": {"name": "demo", "parameters": {"image": "prod"}}}).to_string(), StatusCode::BAD_REQUEST, "start with 'demo'"),
        (json!({"job": {"name": "demo", "parameters": [1]}}).to_string(), StatusCode::BAD_REQUEST, "parameters"),
        (json!({"job": {"name": "demo", "parameters": {"image": "demo"}, "metadata": {"deadline": "soon"}}}).to_string(), StatusCode::BAD_REQUEST, "deadline"),
        (json!({"job": {"name": "demo", "parameters": {"image": "demo"}, "metadata": {"stop_timeout": 0}}}).to_string(), StatusCode::BAD_REQUEST, "stop_timeout"),
        (json!({"job": {"name": "demo", "parameters": {"image": "demo"}, "status_hook": "ftp://x/y"}}).to_string(), StatusCode::BAD_REQUEST, "status_hook"),
        (json!({"job": {"name": "demo", "parameters": {"image": "demo"}, "metadata": {"shedule_delay": 3}}}).to_string(), StatusCode::BAD_REQUEST, "shedule_delay"),
        (json!({"job": {"name": "crash", "parameters": {"panic_in": "validate"}}}).to_string(), StatusCode::BAD_REQUEST, "trapped in `validate`"),
        (json!({"job": {"name": "demo", "parameters": {"image": "x".repeat(5000)}}}).to_string(), StatusCode::PAYLOAD_TOO_LARGE, "length limit"),
    ];
    for (body, status, mentions) in cases {
        let (got, reply) = TestServer::send(post(body.clone())).await;
        assert_error(got, &reply, status, mentions);
    }
    // A batch with one bad job names it and stores none of them.
    let batch = json!({"jobs": [
        {"name": "demo", "parameters": {"image": "demo-ok"}},
        {"name": "demo", "parameters": {"image": "prod"}}
    ]});
    let (got, reply) =
        TestServer::send(s.authed(Method::POST, "/api/v1/jobs/batch").json(&batch)).await;
    assert_error(got, &reply, StatusCode::BAD_REQUEST, "job 1 of the batch");
    // The first bad job names the batch's error, whatever check it fails:
    // here a trap in `validate` (job 1) comes before a bad stop timeout (job 2)
    // and a bad stop timeout (job 1) before a refusal by `validate` (job 2),
    // across plugins.
    let bad_timeout =
        json!({"name": "demo", "parameters": {"image": "demo"}, "metadata": {"stop_timeout": 0}});
    for (jobs, mentions) in [
        (
            json!([{"name": "demo", "parameters": {"image": "demo-ok"}},
                   {"name": "crash", "parameters": {"panic_in": "validate"}},
                   bad_timeout.clone()]),
            "job 1 of the batch: the plugin `crash` trapped",
        ),
        (
            json!([{"name": "crash", "parameters": {}},
                   bad_timeout.clone(),
                   {"name": "demo", "parameters": {"image": "prod"}}]),
            "job 1 of the batch",
        ),
    ] {
        let batch = json!({ "jobs": jobs });
        let (got, reply) =
            TestServer::send(s.authed(Method::POST, "/api/v1/jobs/batch").json(&batch)).await;
        assert_error(got, &reply, StatusCode::BAD_REQUEST, mentions);
        assert!(!reply.to_string().contains("prod"), "{reply}");
    }
    // Two identical unique jobs in one batch: bad input, and neither is stored.
    let twins = json!({"jobs": [
        {"name": "demo", "parameters": {"image": "demo-u"}, "metadata": {"unique": true}},
        {"name": "demo", "parameters": {"image": "demo-u"}, "metadata": {"unique": true}}
    ]});
    let (got, reply) =
        TestServer::send(s.authed(Method::POST, "/api/v1/jobs/batch").json(&twins)).await;
    assert_error(
        got,
        &reply,
        StatusCode::BAD_REQUEST,
        "same name (demo) and parameters",
    );
    assert_eq!(
        s.service.store().queue_len().await.expect("queue"),
        0,
        "nothing was stored"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_actions_and_conflicts() {
    let s = TestServer::start(&["noop"]).await;
    let missing = uuid::Uuid::new_v4();
    let (st, body) =
        TestServer::send(s.authed(Method::GET, &format!("/api/v1/jobs/{missing}"))).await;
    assert_error(st, &body, StatusCode::NOT_FOUND, &missing.to_string());
    let (st, body) = TestServer::send(s.authed(Method::GET, "/api/v1/jobs/not-a-uuid")).await;
    assert_error(st, &body, StatusCode::NOT_FOUND, "not-a-uuid");
    let (st, body) =
        TestServer::send(s.authed(Method::GET, &format!("/api/v1/jobs/{missing}/log"))).await;
    assert_error(st, &body, StatusCode::NOT_FOUND, &missing.to_string());
    let (st, body) = s.action(&missing.to_string(), "stop").await;
    assert_error(st, &body, StatusCode::NOT_FOUND, &missing.to_string());

    let id = s.submit_ok(json!({"name": "noop"})).await;
    let (st, body) = s.action(&id, "pause").await;
    assert_error(st, &body, StatusCode::BAD_REQUEST, "pause");
    s.wait_status(&id, "success").await;
    let (st, body) = s.action(&id, "retry").await;
    assert_error(st, &body, StatusCode::CONFLICT, "success");
    let (st, body) = TestServer::send(s.authed(Method::GET, "/api/v1/nowhere")).await;
    assert_error(st, &body, StatusCode::NOT_FOUND, "route");
    let (st, body) = TestServer::send(s.authed(Method::DELETE, "/api/v1/jobs")).await;
    assert_error(st, &body, StatusCode::METHOD_NOT_ALLOWED, "method");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_required_except_for_health_and_stats() {
    let s = TestServer::start(&["noop"]).await;
    let job = json!({"job": {"name": "noop"}});
    let (st, body) = TestServer::send(s.client.post(s.url("/api/v1/jobs")).json(&job)).await;
    assert_error(st, &body, StatusCode::UNAUTHORIZED, "Harbor-Secret");
    let wrong = s
        .client
        .post(s.url("/api/v1/jobs"))
        .header("Authorization", "Harbor-Secret nope")
        .json(&job);
    let (st, body) = TestServer::send(wrong).await;
    assert_error(st, &body, StatusCode::UNAUTHORIZED, "wrong");
    let other_scheme = s
        .client
        .get(s.url("/api/v1/jobs/x"))
        .header("Authorization", format!("Bearer {SECRET}"));
    assert_eq!(
        TestServer::send(other_scheme).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (st, body) = TestServer::send(s.client.get(s.url("/_ping"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body, json!({"healthy": true, "error": ""}));
    let (st, body) = TestServer::send(s.client.get(s.url("/api/v1/stats"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body[0]["status"], "healthy");
    assert_eq!(body[0]["concurrency"], 2);
    assert_eq!(body[0]["job_names"], json!(["noop"]));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_in_ids_and_plugin_names_reach_no_file() {
    let s = TestServer::start(&["noop"]).await;
    // A file next to the data dir that a traversal would reach.
    let secret_file = s.data_dir.join("logs").join("..").join("outside.txt");
    std::fs::write(&secret_file, "must not be served").expect("write");
    for id in [
        "../outside.txt",
        "..%2foutside.txt",
        "..%252foutside.txt",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "..\\outside",
    ] {
        for suffix in ["", "/log", "/executions"] {
            let (status, body) =
                TestServer::send(s.authed(Method::GET, &format!("/api/v1/jobs/{id}{suffix}")))
                    .await;
            assert!(
                status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
                "{id}{suffix}: {status} {body}"
            );
            assert!(
                !body.to_string().contains("must not be served"),
                "{id}{suffix}: {body}"
            );
        }
        let (status, _) = TestServer::send(
            s.authed(Method::POST, &format!("/api/v1/plugins/{id}/validate"))
                .json(&json!({})),
        )
        .await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "plugin {id}: {status}"
        );
    }
    // A job name that looks like a path is just an unknown name.
    let (status, body) = s.submit(json!({"name": "../../noop"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    s.shutdown().await;
}
