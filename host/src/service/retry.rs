//! Back-off between attempts: exponential from the plugin's initial delay, capped
//! at its maximum, with "equal jitter" (half fixed, half random) so that jobs that
//! failed together do not retry together.

use std::time::Duration;

use crate::runtime::PluginInfo;

/// The wait before retry number `retry` (1 for the first retry).
pub fn backoff(info: &PluginInfo, retry: u32) -> Duration {
    backoff_with(
        info.initial_backoff,
        info.max_backoff,
        retry,
        fastrand::f64(),
    )
}

/// `backoff` with the random draw given (in `[0, 1)`), for tests.
pub fn backoff_with(initial: Duration, max: Duration, retry: u32, draw: f64) -> Duration {
    let exp = retry.saturating_sub(1).min(32);
    let full = initial.saturating_mul(1u32 << exp.min(31)).min(max);
    let half = full / 2;
    half + half.mul_f64(draw.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let max = Duration::from_secs(10);
        assert_eq!(backoff_with(S, max, 1, 1.0), S);
        assert_eq!(backoff_with(S, max, 1, 0.0), S / 2);
        assert_eq!(backoff_with(S, max, 3, 1.0), 4 * S);
        assert_eq!(backoff_with(S, max, 30, 1.0), max);
        assert_eq!(backoff_with(S, max, u32::MAX, 0.0), max / 2);
        assert_eq!(backoff_with(Duration::ZERO, max, 5, 0.5), Duration::ZERO);
    }
}
