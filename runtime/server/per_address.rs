//! AS2 requests under way per client address. One address (a stranger, or
//! a broken gateway) may hold at most so many requests at once, so that it
//! cannot take every connection and file descriptor from the partners.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct PerAddress {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One request's place; given back when dropped.
pub struct Slot {
    table: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    /// Takes a place for `address`, or `None` when it holds `limit` already.
    pub fn enter(self: &Arc<Self>, address: IpAddr, limit: usize) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(address).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            table: self.clone(),
            address,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_limit() {
        let table = Arc::new(PerAddress::default());
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = table.enter(a, 2).expect("first");
        let _second = table.enter(a, 2).expect("second");
        assert!(table.enter(a, 2).is_none());
        assert!(table.enter(b, 2).is_some());
        drop(first);
        assert!(table.enter(a, 2).is_some());
    }
}
