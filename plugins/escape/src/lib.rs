//! A hostile job that tries to leave the sandbox: read files, list directories,
//! read the environment and arguments, open sockets. It succeeds only if every
//! attempt was denied, and logs what it tried.

use std::net::{TcpListener, TcpStream, UdpSocket};

use wasmjobs_sdk::{Context, Job, JobInfo, Params, RunError};

struct Escape;

impl Job for Escape {
    fn info() -> JobInfo {
        JobInfo::new(
            "escape",
            "tries files, env and sockets; succeeds if all are denied",
        )
    }

    fn run(ctx: &Context, _params: &Params) -> Result<(), RunError> {
        let mut leaks = Vec::new();
        let mut check = |what: &str, allowed: bool| {
            ctx.info(&format!(
                "{what}: {}",
                if allowed { "ALLOWED" } else { "denied" }
            ));
            if allowed {
                leaks.push(what.to_string());
            }
        };
        check("read /etc/passwd", std::fs::read("/etc/passwd").is_ok());
        check("read ./Cargo.toml", std::fs::read("Cargo.toml").is_ok());
        check("list /", std::fs::read_dir("/").is_ok());
        check(
            "create /tmp/escape",
            std::fs::write("/tmp/escape", b"x").is_ok(),
        );
        check("environment", std::env::vars().next().is_some());
        check("arguments", std::env::args().next().is_some());
        check(
            "tcp connect 127.0.0.1:22",
            TcpStream::connect("127.0.0.1:22").is_ok(),
        );
        check(
            "tcp listen 127.0.0.1:0",
            TcpListener::bind("127.0.0.1:0").is_ok(),
        );
        check(
            "udp bind 127.0.0.1:0",
            UdpSocket::bind("127.0.0.1:0").is_ok(),
        );
        if leaks.is_empty() {
            Ok(())
        } else {
            Err(RunError::failed(format!(
                "sandbox leaks: {}",
                leaks.join(", ")
            )))
        }
    }
}

wasmjobs_sdk::export_job!(Escape);
