//! Identical work asked for at the same time is done once: the first caller
//! of a key computes, the others wait for its answer and share it. A search
//! UI under many users sends the same keystrokes and first pages at once,
//! and agents the same question; without this, each would take a core.
//!
//! Only work in flight is shared: an entry leaves when its answer is in
//! (later callers go to the caches, or compute anew). If the caller that
//! computes is cancelled (its client went away), a waiting caller takes the
//! work over.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

pub struct Coalescer<K, V> {
    inflight: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
    /// Names the work in `crmsearch_coalesced_total{what}`.
    what: &'static str,
}

impl<K: Hash + Eq + Clone, V: Clone> Coalescer<K, V> {
    pub fn new(what: &'static str) -> Self {
        Self {
            inflight: Mutex::default(),
            what,
        }
    }

    /// The answer of `work` for `key`, computed here or by a caller with
    /// the same key already at it.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let (cell, joined) = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&key) {
                Some(cell) => (cell.clone(), true),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    map.insert(key.clone(), cell.clone());
                    (cell, false)
                }
            }
        };
        if joined {
            metrics::counter!("crmsearch_coalesced_total", "what" => self.what).increment(1);
        }
        let value = cell.get_or_init(work).await.clone();
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&key);
        }
        value
    }

    /// Keys in flight (for tests).
    pub fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_computation() {
        let c = Arc::new(Coalescer::<u32, u64>::new("test"));
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (c, runs, gate) = (c.clone(), runs.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                c.run(7, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    42
                })
                .await
            }));
        }
        // every caller has joined before the one computing finishes
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 42);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(c.is_empty(), "the entry left with its answer");
        // later: computed anew
        assert_eq!(c.run(7, || async { 43 }).await, 43);
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_leader_is_taken_over() {
        let c = Arc::new(Coalescer::<u32, u64>::new("test"));
        let leader = {
            let c = c.clone();
            tokio::spawn(async move { c.run(1, std::future::pending::<u64>).await })
        };
        while c.is_empty() {
            tokio::task::yield_now().await;
        }
        let follower = {
            let c = c.clone();
            tokio::spawn(async move { c.run(1, || async { 5 }).await })
        };
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        leader.abort();
        assert_eq!(follower.await.unwrap(), 5);
        assert!(c.is_empty());
    }
}
