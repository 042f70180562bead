//! Hand-offs between pipeline threads that never block the producer: a one-slot mailbox where a
//! newer frame replaces the older one (which is handed back to be counted and recycled), and a
//! fixed pool of frame buffers allocated once.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// One slot, latest wins.
pub struct Mailbox<T> {
    slot: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox { slot: Mutex::new(None), ready: Condvar::new() }
    }
}

impl<T> Mailbox<T> {
    /// Puts `item` in the slot; returns the older item it displaced, if the consumer was busy.
    pub fn put(&self, item: T) -> Option<T> {
        let old = self.slot.lock().unwrap().replace(item);
        self.ready.notify_one();
        old
    }

    /// Takes the item, waiting at most `timeout`.
    pub fn take_timeout(&self, timeout: Duration) -> Option<T> {
        let slot = self.slot.lock().unwrap();
        let (mut slot, _) = self.ready.wait_timeout_while(slot, timeout, |s| s.is_none()).unwrap();
        slot.take()
    }

    pub fn try_take(&self) -> Option<T> {
        self.slot.lock().unwrap().take()
    }
}

/// Buffers allocated once; `get` returns `None` rather than allocating when all are in use.
pub struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    pub fn new(count: usize, bytes: usize) -> Pool {
        Pool { free: Mutex::new((0..count).map(|_| Vec::with_capacity(bytes)).collect()) }
    }

    pub fn get(&self) -> Option<Vec<u8>> {
        self.free.lock().unwrap().pop()
    }

    /// Returns a buffer; the pool's own Vec was created with room for all of them.
    pub fn put(&self, buf: Vec<u8>) {
        self.free.lock().unwrap().push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_item_displaces_the_older_one_and_hands_it_back() {
        let m = Mailbox::default();
        assert_eq!(m.put(1), None);
        assert_eq!(m.put(2), Some(1));
        assert_eq!(m.take_timeout(Duration::from_millis(1)), Some(2));
        assert_eq!(m.take_timeout(Duration::from_millis(1)), None);
    }

    #[test]
    fn the_pool_runs_dry_instead_of_allocating() {
        let p = Pool::new(2, 16);
        let (a, b) = (p.get().unwrap(), p.get().unwrap());
        assert!(p.get().is_none());
        assert!(a.capacity() >= 16);
        p.put(a);
        p.put(b);
        assert!(p.get().is_some());
    }
}
