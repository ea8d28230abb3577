//! Capacity maps (DTR): a node has named capacities (`{"scan": 1}`); a job needs
//! some of them while it runs. A worker claims a job only if its needs fit what is
//! free; a job whose needs exceed the node's total could never run and is refused
//! at submit.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug)]
pub struct Capacity {
    total: BTreeMap<String, u32>,
    in_use: Mutex<BTreeMap<String, u32>>,
}

impl Capacity {
    pub fn new(total: BTreeMap<String, u32>) -> Self {
        Self {
            total,
            in_use: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn total(&self) -> &BTreeMap<String, u32> {
        &self.total
    }

    pub fn in_use(&self) -> BTreeMap<String, u32> {
        self.lock().clone()
    }

    /// `Err` naming the capacity when `needs` can never fit this node.
    pub fn can_ever_fit(&self, needs: &BTreeMap<String, u32>) -> Result<(), String> {
        for (name, &amount) in needs.iter().filter(|(_, a)| **a > 0) {
            let have = self.total.get(name).copied().unwrap_or(0);
            if amount > have {
                return Err(format!(
                    "the job needs {amount} of capacity {name:?} but no node has more than {have}"
                ));
            }
        }
        Ok(())
    }

    /// Reserve `needs` if they fit what is free now.
    pub fn try_reserve(&self, needs: &BTreeMap<String, u32>) -> bool {
        let mut in_use = self.lock();
        let fits = needs.iter().all(|(name, &amount)| {
            let used = in_use.get(name).copied().unwrap_or(0);
            let total = self.total.get(name).copied().unwrap_or(0);
            amount == 0 || used.saturating_add(amount) <= total
        });
        if fits {
            for (name, &amount) in needs.iter().filter(|(_, a)| **a > 0) {
                *in_use.entry(name.clone()).or_insert(0) += amount;
            }
        }
        fits
    }

    pub fn release(&self, needs: &BTreeMap<String, u32>) {
        let mut in_use = self.lock();
        for (name, &amount) in needs {
            if let Some(used) = in_use.get_mut(name) {
                *used = used.saturating_sub(amount);
                if *used == 0 {
                    in_use.remove(name);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
        self.in_use.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn reserves_what_fits_and_releases() {
        let c = Capacity::new(map(&[("scan", 1), ("scan_check", 1)]));
        assert!(c.try_reserve(&map(&[("scan", 1)])));
        assert!(!c.try_reserve(&map(&[("scan", 1)])), "scan is full");
        assert!(
            c.try_reserve(&map(&[("scan_check", 1)])),
            "another capacity still fits"
        );
        assert!(c.try_reserve(&map(&[])), "no needs always fit");
        c.release(&map(&[("scan", 1)]));
        assert!(c.try_reserve(&map(&[("scan", 1)])));
        assert_eq!(c.in_use(), map(&[("scan", 1), ("scan_check", 1)]));
    }

    #[test]
    fn impossible_needs_are_named() {
        let c = Capacity::new(map(&[("scan", 1)]));
        assert!(c.can_ever_fit(&map(&[("scan", 1)])).is_ok());
        assert!(c.can_ever_fit(&map(&[("gpu", 0)])).is_ok());
        let err = c.can_ever_fit(&map(&[("scan", 2)])).unwrap_err();
        assert!(err.contains("\"scan\""), "{err}");
        assert!(c.can_ever_fit(&map(&[("gpu", 1)])).is_err());
    }
}
