//! The load generator of the single-submit and round-trip figures.
//!
//! Each client is one kept-alive HTTP/1.1 connection driven by hyper's own
//! client connection (`hyper::client::conn::http1`): no pool to check a
//! connection out of, no URL parsed and no JSON encoded per request; the
//! request's parts are built once and cloned (the body's bytes are shared).
//! The clients run on the server's runtime and so share its two cores: what
//! they spend is taken from the server, as wrk's or any client's would be on
//! one machine, so they should spend as little as a client can. (reqwest,
//! used before, took ~17.5% of the 64-client phase's CPU.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;

/// One request, sent again and again.
#[derive(Clone)]
pub struct Load {
    /// `host:port` of the server: where to connect, and the `Host` header.
    host: HeaderValue,
    method: Method,
    path: Uri,
    /// The `Authorization` header, if any.
    auth: Option<HeaderValue>,
    /// A JSON body, if any.
    body: Option<Bytes>,
}

impl Load {
    /// `method path` on the server whose base URL is `base` (`http://host:port`).
    pub fn new(base: &str, method: Method, path: &str) -> Self {
        let base: Uri = base.parse().expect("a base URL");
        assert_eq!(
            base.scheme_str(),
            Some("http"),
            "the bench's server speaks plain HTTP"
        );
        let host = base.authority().expect("host:port").as_str();
        Self {
            host: HeaderValue::from_str(host).expect("a host"),
            method,
            path: path.parse().expect("a path"),
            auth: None,
            body: None,
        }
    }

    /// With `Authorization: value`.
    pub fn auth(mut self, value: &str) -> Self {
        self.auth = Some(HeaderValue::from_str(value).expect("a header value"));
        self
    }

    /// With `body` as its JSON body, encoded once.
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(Bytes::from(serde_json::to_vec(body).expect("json")));
        self
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut r = Request::builder()
            .method(self.method.clone())
            .uri(self.path.clone())
            .header(HOST, self.host.clone());
        if let Some(auth) = &self.auth {
            r = r.header(AUTHORIZATION, auth.clone());
        }
        let body = match &self.body {
            Some(body) => {
                r = r.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                body.clone()
            }
            None => Bytes::new(),
        };
        r.body(Full::new(body)).expect("a request")
    }

    /// `total` requests from `clients` concurrent clients (each on a
    /// connection of its own, kept alive), each answered with `status` and
    /// its body read before the client's next; requests/s.
    pub async fn round_trips(&self, clients: usize, total: usize, status: u16) -> f64 {
        let next = Arc::new(AtomicUsize::new(0));
        // Connected before the clock starts, as a kept-alive client would be.
        let mut senders = Vec::with_capacity(clients);
        for _ in 0..clients {
            let host = self.host.to_str().expect("an ASCII host");
            let stream = tokio::net::TcpStream::connect(host).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            senders.push(sender);
        }
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(clients);
        for mut sender in senders {
            let (next, load) = (next.clone(), self.clone());
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let r = sender.send_request(load.request()).await.expect("request");
                    let code = r.status().as_u16();
                    let body = r.into_body().collect().await.expect("body").to_bytes();
                    assert_eq!(code, status, "{}", String::from_utf8_lossy(&body));
                }
            }));
        }
        for t in tasks {
            t.await.expect("client");
        }
        total as f64 / started.elapsed().as_secs_f64()
    }
}
