//! HTTPS: with `https_config` the API is served over TLS with the configured
//! certificate, and plain HTTP is not answered.

use reqwest::StatusCode;
use serde_json::json;
use wasmjobs_tests::server::{SECRET, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_over_tls_with_the_configured_certificate() {
    let certs = tempfile::tempdir().expect("dir");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let (cert, key) = (
        certs.path().join("server.crt"),
        certs.path().join("server.key"),
    );
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let s = TestServer::start_with(&["noop"], |c| c.tls = Some((cert.clone(), key.clone()))).await;
    assert!(s.base.starts_with("https://"));

    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).expect("pem"),
        )
        .build()
        .expect("client");
    let resp = trusting
        .post(s.url("/api/v1/jobs"))
        .header("Authorization", format!("Harbor-Secret {SECRET}"))
        .json(&json!({"job": {"name": "noop"}}))
        .send()
        .await
        .expect("https request");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    // A client that does not trust the certificate is refused by TLS, and plain
    // HTTP on the TLS port gets no API answer.
    assert!(
        reqwest::Client::new()
            .get(s.url("/_ping"))
            .send()
            .await
            .is_err()
    );
    let plain = s.base.replacen("https://", "http://", 1);
    let answered = reqwest::Client::new()
        .get(format!("{plain}/_ping"))
        .send()
        .await;
    assert!(answered.is_err() || answered.is_ok_and(|r| r.status() != StatusCode::OK));
    s.shutdown().await;
}
