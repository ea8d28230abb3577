//! The process's own log: `tracing` to stderr, filtered by `RUST_LOG` or else
//! by the configured level. One setup for the binary and for the benchmarks,
//! so a benchmark pays for the spans and events a job makes as a node does.

/// Install the subscriber: stderr, colours only on a terminal, `RUST_LOG` if
/// set, else `default_level` (`debug`, `info`, `warn` or `error`). A second
/// call (a subscriber is already installed) changes nothing.
pub fn init_tracing(default_level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
