//! The result cache of the search endpoints: a search-as-you-type UI sends
//! the same few keystrokes, facet clicks and first pages over and over.
//! An entry is the serialized answer of one tenant's request, kept with the
//! [`Version`] of that tenant's documents it was computed at; it is served
//! only while the version is unchanged, so a write invalidates by moving the
//! version (one counter per tenant, bumped when the commit is visible), never
//! by scanning keys, and another tenant's writes leave it alone. Bounded by
//! bytes, least recently used out first; sharded so requests on different
//! cores rarely meet on a lock.

use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;

use bytes::Bytes;
use indexer::store::Version;
use uuid::Uuid;

use crate::search::{Request, Scope};

/// What was asked, as the engine took it: two requests that parse the same
/// share an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    /// A contact or company search.
    Search(Scope, Request),
    /// An autocomplete prefix and how many suggestions.
    Autocomplete { q: String, limit: usize },
}

/// An entry's key: the tenant and its query.
pub type Key = (Uuid, Query);

struct Entry<V> {
    version: V,
    body: Bytes,
    weight: usize,
}

struct Shard<V> {
    lru: lru::LruCache<Key, Entry<V>>,
    bytes: usize,
}

/// `V`: what an entry must match to serve (the index's [`Version`]).
pub struct ResultCache<V = Version> {
    shards: Box<[Mutex<Shard<V>>]>,
    /// Bytes each shard may hold.
    budget: usize,
    hasher: std::hash::RandomState,
}

const SHARDS: usize = 16;
/// Bookkeeping of an entry besides its body and request.
const OVERHEAD: usize = 128;

impl<V: Copy + PartialEq> ResultCache<V> {
    /// A cache of at most `bytes` (0: off).
    pub fn new(bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        lru: lru::LruCache::unbounded(),
                        bytes: 0,
                    })
                })
                .collect(),
            budget: bytes / SHARDS,
            hasher: std::hash::RandomState::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    fn shard(&self, key: &Key) -> std::sync::MutexGuard<'_, Shard<V>> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer to `query` of `tenant`, if one was computed at `version`.
    pub fn get(&self, tenant: Uuid, query: Query, version: V) -> (Option<Bytes>, Key) {
        let key = (tenant, query);
        if !self.enabled() {
            return (None, key);
        }
        let mut shard = self.shard(&key);
        let Shard { lru, bytes } = &mut *shard;
        let found = match lru.get(&key) {
            Some(e) if e.version == version => Some(e.body.clone()),
            Some(_) => {
                // computed before the tenant's last change: it never serves again
                if let Some(e) = lru.pop(&key) {
                    *bytes -= e.weight;
                }
                None
            }
            None => None,
        };
        drop(shard);
        metrics::counter!("crmsearch_result_cache_total", "layer" => "memory", "result" => if found.is_some() { "hit" } else { "miss" })
            .increment(1);
        (found, key)
    }

    /// Keeps `body`, the answer to `key` at `version` (too large an answer
    /// is not kept).
    pub fn put(&self, key: Key, version: V, body: Bytes) {
        let weight = body.len() + key_size(&key.1) + OVERHEAD;
        if !self.enabled() || weight > self.budget / 8 {
            return;
        }
        let mut shard = self.shard(&key);
        let Shard { lru, bytes } = &mut *shard;
        if let Some(old) = lru.put(
            key,
            Entry {
                version,
                body,
                weight,
            },
        ) {
            *bytes -= old.weight;
        }
        *bytes += weight;
        while *bytes > self.budget {
            match lru.pop_lru() {
                Some((_, e)) => *bytes -= e.weight,
                None => break,
            }
        }
    }

    /// Bytes held, all shards.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }
}

/// The layer behind [`ResultCache`]: answers in Redis, shared by every
/// server process on it. An entry is named by the tenant, the WAL position
/// of the tenant's documents ([`Version::position`], the same in every
/// process that shows those documents) and a digest of the query, so a write
/// invalidates by moving the position, as in the process; entries expire
/// after [`SharedCache::TTL`]. A process whose index is behind asks under an
/// older position and never reads an answer newer than what it shows.
pub struct SharedCache {
    redis: std::sync::Arc<crate::redis_conn::Redis>,
}

impl SharedCache {
    pub const TTL_SECS: u64 = 300;
    /// Larger answers stay in the process only.
    pub const MAX_BYTES: usize = 256 << 10;

    pub fn new(redis: std::sync::Arc<crate::redis_conn::Redis>) -> Self {
        Self { redis }
    }

    /// The entry of `key` at `position`.
    pub fn name(key: &Key, position: u64) -> String {
        use sha2::Digest;
        let (tenant, query) = key;
        // the query as this build parses it: another build, another name
        let digest = sha2::Sha256::digest(format!("{query:?}").as_bytes());
        format!(
            "crmsearch:rc:{}:{tenant}:{position:x}:{}",
            env!("CARGO_PKG_VERSION"),
            hex::encode(&digest[..16])
        )
    }

    /// The answer another process (or this one) computed under `name`
    /// ([`SharedCache::name`]); `None` when there is none or Redis cannot say.
    pub async fn get(&self, name: &str) -> Option<Bytes> {
        let found: Option<Vec<u8>> = self
            .redis
            .run("cache_get", |mut conn| async move {
                redis::cmd("GET").arg(name).query_async(&mut conn).await
            })
            .await
            .flatten();
        metrics::counter!("crmsearch_result_cache_total", "layer" => "redis", "result" => if found.is_some() { "hit" } else { "miss" })
            .increment(1);
        found.map(Bytes::from)
    }

    /// Keeps `body` under `name` for the others, in the background.
    pub fn put(&self, name: String, body: Bytes) {
        if body.len() > Self::MAX_BYTES {
            return;
        }
        let redis = self.redis.clone();
        tokio::spawn(async move {
            redis
                .run("cache_put", |mut conn| async move {
                    redis::cmd("SET")
                        .arg(&name)
                        .arg(&body[..])
                        .arg("EX")
                        .arg(Self::TTL_SECS)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await
        });
    }
}

/// Roughly what a key holds on the heap.
fn key_size(q: &Query) -> usize {
    match q {
        Query::Search(_, r) => {
            r.q.len()
                + r.facets.iter().map(|f| f.len() + 24).sum::<usize>()
                + r.filter.len() * 64
                + r.sort.as_ref().map_or(0, String::len)
                + r.cursor.as_ref().map_or(0, String::len)
                + 160
        }
        Query::Autocomplete { q, .. } => q.len() + 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Query {
        Query::Autocomplete {
            q: text.into(),
            limit: 8,
        }
    }

    #[test]
    fn serves_only_at_the_version_it_was_computed_at() {
        let c = ResultCache::<u64>::new(1 << 20);
        let t = Uuid::new_v4();
        let (v1, v2) = (1, 2);
        let (none, key) = c.get(t, q("jo"), v1);
        assert!(none.is_none());
        c.put(key, v1, Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(c.get(t, q("jo"), v1).0.as_deref(), Some(&b"{\"a\":1}"[..]));
        // another tenant, another query: not this entry
        assert!(c.get(Uuid::new_v4(), q("jo"), v1).0.is_none());
        assert!(c.get(t, q("jon"), v1).0.is_none());
        // the tenant changed: gone, and its bytes freed
        assert!(c.get(t, q("jo"), v2).0.is_none());
        assert!(c.get(t, q("jo"), v1).0.is_none());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn stays_within_its_bytes() {
        let c = ResultCache::<u64>::new(SHARDS * 4096);
        let t = Uuid::new_v4();
        for i in 0..1000 {
            let (_, key) = c.get(t, q(&i.to_string()), 1);
            c.put(key, 1, Bytes::from(vec![b'x'; 200]));
        }
        assert!(c.bytes() <= SHARDS * 4096, "{} bytes", c.bytes());
        assert!(c.bytes() > 0);
        // the newest is still there, the oldest is not
        assert!(c.get(t, q("999"), 1).0.is_some());
        assert!(c.get(t, q("0"), 1).0.is_none());
        // an answer larger than an eighth of a shard is not kept
        let (_, key) = c.get(t, q("big"), 1);
        c.put(key, 1, Bytes::from(vec![b'x'; 4096]));
        assert!(c.get(t, q("big"), 1).0.is_none());
        // off
        let off = ResultCache::<u64>::new(0);
        let (_, key) = off.get(t, q("a"), 1);
        off.put(key, 1, Bytes::from_static(b"{}"));
        assert!(off.get(t, q("a"), 1).0.is_none());
    }
}
