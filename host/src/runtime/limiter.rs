//! The memory cap of one instance, with the peak it reached.
//!
//! Growth past the cap is an error, not a failed `memory.grow`: the guest is
//! stopped at once (as `trap_on_grow_failure` would) and the attempt is reported as
//! killed at its memory limit, whatever the guest's allocator would have done.

use wasmtime::ResourceLimiter;

/// The error raised when an instance grows past its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {cap} bytes exceeded (asked for {desired} bytes)")]
pub struct MemoryCapExceeded {
    pub cap: u64,
    pub desired: u64,
}

/// Caps the total linear memory of an instance and records its peak.
#[derive(Debug)]
pub struct MemoryLimiter {
    cap: u64,
    max_table_elements: usize,
    total: u64,
    peak: u64,
    hit_cap: bool,
}

impl MemoryLimiter {
    pub fn new(cap: u64, max_table_elements: usize) -> Self {
        Self {
            cap,
            max_table_elements,
            total: 0,
            peak: 0,
            hit_cap: false,
        }
    }

    /// Highest total linear memory seen, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak
    }

    /// Whether the instance tried to grow past its cap.
    pub fn hit_cap(&self) -> bool {
        self.hit_cap
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current) as u64;
        let total = self.total.saturating_add(grow);
        if total > self.cap {
            self.hit_cap = true;
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                cap: self.cap,
                desired: total,
            }));
        }
        self.total = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_peak_over_memories_and_refuses_past_cap() {
        let mut l = MemoryLimiter::new(100, 10);
        assert!(l.memory_growing(0, 40, None).expect("fits"));
        assert!(l.memory_growing(0, 50, None).expect("fits"));
        assert_eq!(l.peak(), 90);
        assert!(!l.hit_cap());
        assert!(l.memory_growing(40, 60, None).is_err());
        assert!(l.hit_cap());
        assert_eq!(l.peak(), 90);
        assert!(!l.table_growing(0, 11, None).expect("answer"));
    }
}
