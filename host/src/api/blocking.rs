//! Blocking queries (Nomad): `?index=N&wait=30s` answers as soon as the data's
//! modify index passes N, or when `wait` (at most `blocking_max_wait`, 5 minutes by
//! default, which is also the wait when none is given) is over. Waiters
//! sleep on the store's index watch, so they cost nothing while nothing changes.
//! Every response carries the store's index in `X-Wasmjobs-Index`.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use crate::service::JobService;

pub const INDEX_HEADER: &str = "x-wasmjobs-index";

/// A parsed `index`/`wait` pair.
#[derive(Debug, Clone, Copy)]
pub struct Blocking {
    pub index: u64,
    pub wait: Duration,
}

/// Parse the query's `index` and `wait` (at most `max_wait`, which is also the
/// default); `None` when no `index` was given.
pub fn parse(
    index: Option<&str>,
    wait: Option<&str>,
    max_wait: Duration,
) -> Result<Option<Blocking>, ApiError> {
    let wait = match wait {
        None => None,
        Some(w) => {
            let d = match w.parse::<u64>() {
                Ok(secs) => Duration::from_secs(secs),
                Err(_) => humantime::parse_duration(w).map_err(|_| {
                    ApiError::bad_request(format!("wait {w:?} is not a duration like 30s or 5m"))
                })?,
            };
            if d > max_wait {
                return Err(ApiError::bad_request(format!(
                    "wait {w:?} is over the maximum of {} (blocking_max_wait)",
                    humantime::format_duration(max_wait)
                )));
            }
            Some(d)
        }
    };
    match index {
        None if wait.is_some() => Err(ApiError::bad_request("wait needs an index")),
        None => Ok(None),
        Some(i) => {
            // Indexes are JSON-safe signed 64-bit integers (as documented).
            let index = i
                .parse::<u64>()
                .ok()
                .filter(|n| i64::try_from(*n).is_ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "index {i:?} is not an integer from 0 to {}",
                        i64::MAX
                    ))
                })?;
            Ok(Some(Blocking {
                index,
                wait: wait.unwrap_or(max_wait),
            }))
        }
    }
}

/// Run `read` until its index passes `b.index` or the wait is over; returns the
/// last answer.
pub async fn wait_for<T, F, Fut>(
    service: &JobService,
    b: Option<Blocking>,
    mut read: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(T, u64), ApiError>>,
{
    let Some(b) = b else {
        return read().await.map(|(t, _)| t);
    };
    let Some(_waiting) = service.blocking_permit() else {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too many requests",
            format!(
                "{} blocking queries are already waiting (max_blocking_waiters): retry \
                 later, or ask without `index`",
                service.config().max_blocking_waiters
            ),
        ));
    };
    let mut changes = service.store().watch_index();
    let deadline = tokio::time::Instant::now() + b.wait;
    loop {
        changes.borrow_and_update();
        let (value, index) = read().await?;
        if index > b.index || tokio::time::Instant::now() >= deadline {
            return Ok(value);
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Adds `X-Wasmjobs-Index` (the store's current index) to every response that
/// does not set it.
pub async fn index_header(
    State(service): State<JobService>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let index = *service.store().watch_index().borrow();
    response
        .headers_mut()
        .entry(INDEX_HEADER)
        .or_insert_with(|| HeaderValue::from(index));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(300);

    /// Property: any `index`/`wait` strings give a value or a 400, never a panic;
    /// accepted waits are at most the maximum.
    #[test]
    fn random_index_and_wait_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let atoms = [
            "",
            "0",
            "1",
            "30",
            "s",
            "ms",
            "m",
            "h",
            "5m",
            "6m",
            "-1",
            "1e9",
            "99999999999999999999",
            " ",
            "%",
            "\u{0}",
            "1s 2ms",
        ];
        for _ in 0..20_000 {
            let pick = |rng: &mut fastrand::Rng| -> Option<String> {
                if rng.bool() {
                    None
                } else {
                    Some(
                        (0..rng.usize(1..4))
                            .map(|_| atoms[rng.usize(..atoms.len())])
                            .collect(),
                    )
                }
            };
            let (index, wait) = (pick(&mut rng), pick(&mut rng));
            if let Ok(Some(b)) = parse(index.as_deref(), wait.as_deref(), MAX) {
                assert!(b.wait <= MAX, "{index:?} {wait:?}");
            }
        }
        assert!(parse(Some("5"), Some("6m"), MAX).is_err());
        assert!(parse(None, Some("1s"), MAX).is_err());
        assert_eq!(
            parse(Some("5"), Some("2s"), MAX)
                .unwrap()
                .map(|b| (b.index, b.wait)),
            Some((5, Duration::from_secs(2)))
        );
    }
}
