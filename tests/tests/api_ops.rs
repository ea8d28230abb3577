//! The operations APIs: capacity maps, workers, crons, the jobs list, deadlines,
//! task events, blocking queries, health and the audit changefeed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wasmjobs_tests::server::TestServer;

async fn get(s: &TestServer, path: &str) -> (StatusCode, Value) {
    TestServer::send(s.authed(Method::GET, path)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_jobs_take_turns_while_a_scan_check_runs_beside_them() {
    let s = TestServer::start_with(&["sleeper"], |c| {
        c.workers = 3;
        c.runtime.max_concurrent_jobs = 3;
        c.capacity = [("scan".to_string(), 1), ("scan_check".to_string(), 1)].into();
    })
    .await;
    let scan = |ms: u64| json!({"name": "sleeper", "parameters": {"ms": ms}, "metadata": {"capacity_map": {"scan": 1}}});
    let a = s.submit_ok(scan(700)).await;
    let b = s.submit_ok(scan(700)).await;
    let c = s
        .submit_ok(json!({"name": "sleeper", "parameters": {"ms": 700}, "metadata": {"capacity_map": {"scan_check": 1}}}))
        .await;
    for id in [&a, &b, &c] {
        s.wait_status(id, "success").await;
    }
    let span = |id: &str| {
        let id = id.parse().expect("uuid");
        let s = &s;
        async move {
            let j = s.service.get(id).await.expect("job");
            (
                j.attempts[0].started_at,
                j.attempts[0].finished_at.expect("finished"),
            )
        }
    };
    let (a, b, c) = (span(&a).await, span(&b).await, span(&c).await);
    let overlap = |x: (u64, u64), y: (u64, u64)| x.0 < y.1 && y.0 < x.1;
    assert!(
        !overlap(a, b),
        "two scan jobs ran at once on scan: 1: {a:?} {b:?}"
    );
    assert!(
        overlap(a, c) || overlap(b, c),
        "the scan_check job ran beside a scan job: {a:?} {b:?} {c:?}"
    );

    // Needs no node can meet, and malformed maps.
    for (map, mentions) in [
        (json!({"scan": 2}), "\"scan\""),
        (json!({"gpu": 1}), "\"gpu\""),
        (json!({"scan": -1}), "capacity_map"),
        (json!({"scan": 1.5}), "capacity_map"),
        (json!({"scan": "one"}), "capacity_map"),
    ] {
        let (status, body) = s
            .submit(json!({"name": "sleeper", "metadata": {"capacity_map": map}}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{map}: {body}");
        assert!(
            body["description"]
                .as_str()
                .is_some_and(|d| d.contains(mentions)),
            "{map}: {body}"
        );
    }
    // The node shows its capacity in the workers list.
    let (status, body) = get(&s, "/api/v1/workers").await;
    assert_eq!(status, StatusCode::OK);
    let me = &body["workers"][0];
    assert_eq!(me["capacity_map"], json!({"scan": 1, "scan_check": 1}));
    assert_eq!(me["status"], "running");
    assert!(
        me["heartbeat_expiration"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_kills_a_sleeper_and_marks_it_error_with_task_events() {
    let s = TestServer::start(&["sleeper", "flaky", "spin"]).await;
    let late = s
        .submit_ok(json!({"name": "sleeper", "parameters": {"ms": 60000}, "metadata": {"deadline": "500ms"}}))
        .await;
    let job = s.wait_status(&late, "error").await;
    assert_eq!(
        job["attempts"].as_array().map(Vec::len),
        Some(1),
        "a deadline is not retried"
    );
    assert_eq!(job["attempts"][0]["outcome"], "killed");
    assert_eq!(job["attempts"][0]["message"], "deadline exceeded");
    let types = |j: &Value| -> Vec<String> {
        j["task_events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    assert_eq!(
        types(&job),
        [
            "Received",
            "Started",
            "Checkin",
            "Killed",
            "Terminated",
            "Not Restarting"
        ]
    );
    let times: Vec<u128> = job["task_events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            e["time"]
                .as_u64()
                .map(u128::from)
                .unwrap_or_else(|| e["time"].as_f64().unwrap_or(0.0) as u128)
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]) && times[0] > 1_000_000_000_000_000_000,
        "ns times: {times:?}"
    );

    // Retried job.
    let retried = s
        .submit_ok(json!({"name": "flaky", "parameters": {"succeed_on": 2}}))
        .await;
    let job = s.wait_status(&retried, "success").await;
    assert_eq!(
        types(&job),
        [
            "Received",
            "Started",
            "Terminated",
            "Restarting",
            "Started",
            "Terminated"
        ]
    );
    assert!(
        job["task_events"][2]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("failed: transient")),
        "{job}"
    );
    assert!(
        job["task_events"][3]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("retry 1 of 4")),
        "{job}"
    );

    // Stopped job, and a killed one.
    let stopped = s
        .submit_ok(json!({"name": "sleeper", "parameters": {"ms": 60000}}))
        .await;
    let killed = s
        .submit_ok(json!({"name": "spin", "metadata": {"stop_timeout": "200ms"}}))
        .await;
    s.wait_status(&stopped, "running").await;
    s.wait_until(&killed, Duration::from_secs(30), |j| {
        j["check_in"] == "spinning"
    })
    .await;
    s.action(&stopped, "stop").await;
    s.action(&killed, "stop").await;
    let job = s.wait_status(&stopped, "stopped").await;
    assert_eq!(
        types(&job)[1..],
        ["Started", "Checkin", "Killing", "Terminated"]
    );
    let job = s.wait_status(&killed, "stopped").await;
    assert_eq!(
        types(&job)[1..],
        ["Started", "Checkin", "Killing", "Killed", "Terminated"]
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_queries_return_on_change_or_at_wait() {
    let s = TestServer::start(&["sleeper"]).await;
    let id = s
        .submit_ok(json!({"name": "sleeper", "parameters": {"ms": 60000}}))
        .await;
    // The sleeper checks in once as it starts, then only sleeps: after that
    // check-in the job does not change until it is stopped.
    s.wait_until(&id, Duration::from_secs(60), |j| {
        j["check_in"] == "sleeping"
    })
    .await;
    let resp = s
        .authed(Method::GET, &format!("/api/v1/jobs/{id}"))
        .send()
        .await
        .expect("get");
    let index: u64 = resp.headers()["x-wasmjobs-index"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("index");

    // A waiting query returns soon after the job changes.
    let waiter = {
        let req = s.authed(
            Method::GET,
            &format!("/api/v1/jobs/{id}?index={index}&wait=20s"),
        );
        tokio::spawn(async move {
            let r = req.send().await.expect("blocking get");
            (Instant::now(), r.json::<Value>().await.expect("json"))
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiter.is_finished(),
        "the query returned before any change"
    );
    let changed = Instant::now();
    assert_eq!(s.action(&id, "stop").await.0, StatusCode::NO_CONTENT);
    let (returned, body) = waiter.await.expect("join");
    let delay = returned.saturating_duration_since(changed);
    println!("blocking query returned {delay:?} after the change");
    assert!(delay < Duration::from_secs(3), "{delay:?}");
    assert!(body["job"]["revision"].as_u64().is_some());

    // With nothing changing, it answers when `wait` is over.
    s.wait_status(&id, "stopped").await;
    let resp = s
        .authed(Method::GET, &format!("/api/v1/jobs/{id}"))
        .send()
        .await
        .expect("get");
    let index: u64 = resp.headers()["x-wasmjobs-index"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("index");
    let started = Instant::now();
    let (status, _) = get(&s, &format!("/api/v1/jobs/{id}?index={index}&wait=700ms")).await;
    assert_eq!(status, StatusCode::OK);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // Bad parameters, and the header on every response.
    for bad in ["index=x", "index=1&wait=6m", "index=1&wait=soon", "wait=1s"] {
        let (status, body) = get(&s, &format!("/api/v1/jobs/{id}?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    for path in ["/_ping", "/api/v1/stats", "/api/v1/nowhere"] {
        let r = s.client.get(s.url(path)).send().await.expect("get");
        assert!(r.headers().contains_key("x-wasmjobs-index"), "{path}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_list_filters_and_pages_while_jobs_are_added_and_crons_list_templates() {
    let s = TestServer::start(&["noop"]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(s.submit_ok(json!({"name": "noop"})).await);
    }
    let template = s
        .submit_ok(
            json!({"name": "noop", "metadata": {"kind": "Periodic", "cron_spec": "0 0 3 * * *"}}),
        )
        .await;
    let (status, first) = get(&s, "/api/v1/jobs?limit=2&kind=Generic").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let mut seen: Vec<String> = first["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_string())
        .collect();
    let mut cursor = first["next_cursor"].as_str().expect("cursor").to_string();
    // Jobs added while paging appear at the end; nothing is skipped or repeated.
    for _ in 0..3 {
        ids.push(s.submit_ok(json!({"name": "noop"})).await);
    }
    loop {
        let (status, page) = get(
            &s,
            &format!("/api/v1/jobs?limit=2&kind=Generic&cursor={cursor}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["jobs"]
                .as_array()
                .expect("jobs")
                .iter()
                .map(|j| j["id"].as_str().expect("id").to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ids, "creation order, each once");
    let (_, periodic) = get(&s, "/api/v1/jobs?kind=Periodic").await;
    assert_eq!(periodic["jobs"].as_array().map(Vec::len), Some(1));
    for id in &ids {
        s.wait_status(id, "success").await;
    }
    let (_, done) = get(&s, "/api/v1/jobs?status=success&name=noop").await;
    assert_eq!(done["jobs"].as_array().map(Vec::len), Some(8));
    for bad in [
        "status=done",
        "kind=Weekly",
        "limit=0",
        "cursor=zzzz",
        "cursor=00000000000000zz",
        "upstream_job_id=x",
        "sort=asc",
    ] {
        let (status, body) = get(&s, &format!("/api/v1/jobs?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, crons) = get(&s, "/api/v1/crons").await;
    assert_eq!(status, StatusCode::OK);
    let cron = &crons["crons"][0];
    assert_eq!(cron["id"], template.as_str());
    assert_eq!(cron["schedule"], "0 0 3 * * *");
    assert!(
        cron["next_run"]
            .as_str()
            .is_some_and(|t| t.contains("T03:00:00")),
        "{cron}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_turns_503_when_the_store_cannot_be_written() {
    let s = TestServer::start(&["noop"]).await;
    std::fs::write(s.plugins_dir.join("broken.wasm"), b"nope").expect("write");
    s.service.registry().scan().await.expect("scan");
    let (status, body) = TestServer::send(s.client.get(s.url("/_ping"))).await;
    assert_eq!(
        (status, body["healthy"].clone()),
        (StatusCode::OK, json!(true))
    );
    s.service.store().refuse_writes(true);
    let (status, body) = TestServer::send(s.client.get(s.url("/_ping"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["healthy"], false);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot be written")),
        "{body}"
    );
    let (status, cluster) = get(&s, "/api/v1/meta/cluster_status").await;
    assert_eq!(status, StatusCode::OK);
    let issues = cluster["current_issues"].as_array().expect("issues");
    assert!(
        issues.iter().any(|i| i["critical"] == true
            && i["description"]
                .as_str()
                .is_some_and(|d| d.contains("store"))),
        "{cluster}"
    );
    assert!(
        issues.iter().any(|i| i["description"]
            .as_str()
            .is_some_and(|d| d.contains("broken.wasm"))),
        "{cluster}"
    );
    assert_eq!(
        cluster["replica_health"][s.service.node_id()],
        "store unwritable"
    );
    // A submit while the store refuses writes fails cleanly (5xx is the server's
    // own failure here, not bad input) and stores nothing.
    let (status, _) = s.submit(json!({"name": "noop"})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    s.service.store().refuse_writes(false);
    let (status, _) = TestServer::send(s.client.get(s.url("/_ping"))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, cluster) = get(&s, "/api/v1/meta/cluster_status").await;
    assert_eq!(cluster["replica_health"][s.service.node_id()], "OK");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changefeed_pages_like_msr_and_survives_a_restart() {
    let s = TestServer::start(&["noop"]).await;
    for _ in 0..3 {
        let id = s.submit_ok(json!({"name": "noop"})).await;
        s.wait_status(&id, "success").await;
    }
    let ids = |v: &Value| -> Vec<u64> {
        v["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| r["id"].as_str().expect("id").parse().expect("u64"))
            .collect()
    };
    // From the start, forward; plugin loads come first.
    let (status, all) = get(&s, "/api/v1/changes?change_id=0&records=1000").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let every = ids(&all);
    assert_eq!(all["count"].as_u64(), Some(every.len() as u64));
    assert!(
        every.windows(2).all(|w| w[0] < w[1]),
        "oldest to newest, ids grow"
    );
    assert_eq!(all["records"][0]["category"], "plugin");
    assert_eq!(all["records"][0]["status"], "loaded");
    let statuses: Vec<&str> = all["records"]
        .as_array()
        .expect("r")
        .iter()
        .filter(|r| r["category"] == "job")
        .map(|r| r["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        statuses.len(),
        9,
        "pending, running, success for 3 jobs: {statuses:?}"
    );
    // Exclusive start, forward.
    let (_, page) = get(
        &s,
        &format!("/api/v1/changes?change_id={}&records=3", every[1]),
    )
    .await;
    assert_eq!(ids(&page), every[2..5]);
    // 1 = the most recent, records taken as negative.
    let (_, latest) = get(&s, "/api/v1/changes?change_id=1&records=2").await;
    assert_eq!(ids(&latest), every[every.len() - 2..]);
    let (_, latest_neg) = get(&s, "/api/v1/changes?change_id=1&records=-2").await;
    assert_eq!(ids(&latest_neg), every[every.len() - 2..]);
    // Negative records: the ones preceding change_id, oldest first.
    let (_, before) = get(
        &s,
        &format!("/api/v1/changes?change_id={}&records=-3", every[5]),
    )
    .await;
    assert_eq!(ids(&before), every[2..5]);
    let (_, none_before) = get(&s, "/api/v1/changes?change_id=0&records=-3").await;
    assert_eq!(none_before["count"], 0);
    // Bad input.
    let (status, body) = get(&s, "/api/v1/changes?change_id=987654321987").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    for bad in ["change_id=abc", "records=0", "records=100000", "records=x"] {
        let (status, body) = get(&s, &format!("/api/v1/changes?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    // Records survive a restart and new ids are larger.
    let s = s.restart().await;
    let id = s.submit_ok(json!({"name": "noop"})).await;
    s.wait_status(&id, "success").await;
    let (_, after) = get(&s, "/api/v1/changes?change_id=0&records=1000").await;
    let after_ids = ids(&after);
    assert_eq!(
        after_ids[..every.len()],
        every[..],
        "old records are all still there"
    );
    let fresh: HashSet<u64> = after_ids[every.len()..].iter().copied().collect();
    assert!(
        fresh.iter().all(|i| *i > *every.last().expect("last")),
        "ids only grow"
    );
    s.shutdown().await;
}
