//! The OpenAPI document (generated from the handlers) and schemathesis against the
//! live server: every operation fuzzed and walked statefully, all checks (but
//! positive data acceptance, see `scripts/schemathesis`): no server error, no
//! answer that violates the document, no invalid request accepted.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use wasmjobs_tests::server::{SECRET, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_every_route_and_every_route_answers() {
    let s = TestServer::start(&["noop"]).await;
    // Public, like /_ping: it holds no secret.
    let doc: Value = s
        .client
        .get(s.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            let public =
                ["/_ping", "/api/v1/stats", "/api/v1/openapi.json"].contains(&path.as_str());
            // Protected operations declare the secret, and their 401 and error body.
            assert_eq!(
                op.get("security").is_some(),
                !public,
                "{method} {path}: security"
            );
            // The route is served: a request reaches a handler, not the fallback.
            let concrete = path
                .replace("{id}", "00000000-0000-0000-0000-000000000000")
                .replace("{name}", "noop");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            if !public {
                assert!(op["responses"]["401"].is_object(), "{method} {path}: 401");
                // ... and enforce it: no secret, or a wrong one, is a 401.
                for auth in [None, Some("Harbor-Secret wrong-secret-0123456789")] {
                    let mut req = s.client.request(method.clone(), s.url(&concrete));
                    if let Some(a) = auth {
                        req = req.header("Authorization", a);
                    }
                    let (status, body) = TestServer::send(req.body("{}")).await;
                    assert_eq!(
                        status,
                        StatusCode::UNAUTHORIZED,
                        "{method} {path} {auth:?}: {body}"
                    );
                }
            }
            let (status, body) = TestServer::send(
                s.authed(method.clone(), &concrete)
                    .header("Content-Type", "application/json")
                    .body("{}"),
            )
            .await;
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {body}"
            );
            assert!(
                body["err"] != "not found" || body["description"] != "no such route",
                "{method} {path} is documented but not routed: {body}"
            );
        }
    }
    assert_eq!(operations, 16, "{:?}", paths.keys().collect::<Vec<_>>());
    // Bodies are typed: the job view and the error body are in the components.
    for schema in ["JobView", "ErrorBody", "SubmitBody", "Status", "Kind"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let s = TestServer::start_with(&["noop", "demo", "sleeper", "flaky"], |cfg| {
        // Blocking queries fuzzed with old indexes would otherwise wait 5 minutes.
        cfg.blocking_max_wait = Duration::from_secs(2);
        cfg.hook_retry_for = Duration::from_secs(1);
    })
    .await;
    let script = wasmjobs_tests::repo_root().join("scripts/schemathesis");
    let base = s.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .args([base.as_str(), SECRET, "--max-examples", "50", "--seed", "1"])
            .output()
            .expect("run scripts/schemathesis")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .find("SUMMARY")
        .map_or(stdout.as_ref(), |i| &stdout[i..]);
    println!("{summary}");
    assert!(
        output.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    s.shutdown().await;
}
