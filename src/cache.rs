//! A small time-bounded cache for what nearly every request or write reads and rarely
//! changes: API keys by prefix, sending-domain decisions, a project's webhook endpoints.
//! Entries live `ttl` (one second), so a change made by another Herald process (or the domain
//! verifier) shows within that; changes made through this process clear the cache at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TtlCache<V> {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<String, (V, Instant)>>,
}

impl<V: Clone> TtlCache<V> {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    pub fn put(&self, key: String, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max_entries {
            // Full (of mostly stale entries, at one second each): start over.
            entries.clear();
        }
        entries.insert(key, (value, Instant::now()));
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_clear() {
        let c = TtlCache::new(Duration::from_millis(30), 2);
        c.put("a".into(), 1);
        assert_eq!(c.get("a"), Some(1));
        c.clear();
        assert_eq!(c.get("a"), None);
        c.put("a".into(), 1);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get("a"), None, "expired");
        c.put("b".into(), 2);
        c.put("c".into(), 3);
        c.put("d".into(), 4);
        assert_eq!(
            (c.get("b"), c.get("d")),
            (None, Some(4)),
            "a full cache starts over"
        );
    }
}
