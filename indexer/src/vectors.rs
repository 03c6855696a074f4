//! Vector collections: one per tenant, fed by the same stream as the text
//! index. Below [`VectorConfig::exact_below`] live points a collection is
//! scanned exactly; above it an approximate index ([`VectorIndex`], hnsw_rs
//! today) serves, built in the background. hnsw_rs cannot delete, so an
//! updated or deleted point is a tombstone that searches skip; when
//! tombstones pass [`VectorConfig::rebuild_share`] the collection is rebuilt
//! without them in the background and swapped in under its lock.
//!
//! Every vector is unit length, so cosine similarity is a dot product.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use anyhow::Context;
use hnsw_rs::anndists::dist::{DistDot, Distance};
use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;
use schema::EMBEDDING_DIM;
use uuid::Uuid;

use crate::Lsn;

/// A memory's vector and what filters look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: Uuid,
    pub tenant: Uuid,
    pub agent: String,
    pub subject: Option<String>,
    pub session: Option<String>,
    /// Index into [`KINDS`].
    pub kind: u8,
    pub created_micros: i64,
    pub expires_micros: Option<i64>,
    pub vector: Vec<f32>,
}

/// Memory kinds in the order of [`Point::kind`].
pub const KINDS: [&str; 4] = ["fact", "preference", "episode", "summary"];

/// Which points a search may return.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub agent: Option<String>,
    pub subject: Option<String>,
    pub session: Option<String>,
    /// A bit per kind; 0: every kind.
    pub kinds: u8,
    pub since_micros: Option<i64>,
    pub until_micros: Option<i64>,
    /// Points that expire at or before this instant are gone.
    pub now_micros: i64,
}

/// A nearest point: its id and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub id: Uuid,
    pub similarity: f32,
}

#[derive(Debug, Clone)]
pub struct VectorConfig {
    /// Collections with fewer live points are scanned exactly.
    pub exact_below: usize,
    /// Filters matching at most this many points scan them exactly.
    pub exact_filtered_below: usize,
    /// Tombstones over this share of a collection trigger a rebuild.
    pub rebuild_share: f64,
    pub max_connections: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for VectorConfig {
    fn default() -> Self {
        Self {
            exact_below: 5_000,
            exact_filtered_below: 20_000,
            rebuild_share: 0.2,
            max_connections: 16,
            ef_construction: 100,
            ef_search: 100,
        }
    }
}

/// An approximate nearest-neighbour index over the slots of a collection.
/// Slots are added, never removed; the caller filters dead ones.
pub trait VectorIndex: Send + Sync {
    /// Adds points (their vector and slot), in parallel where it can.
    fn insert(&self, points: &[(&[f32], usize)]);
    /// Up to `k` slots passing `keep`, nearest first, with their distance
    /// (1 − cosine).
    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<(usize, f32)>;
    /// Writes the index under `dir` as `name.*`.
    fn dump(&self, dir: &Path, name: &str) -> anyhow::Result<()>;
}

/// hnsw_rs with the dot-product distance of unit vectors.
pub struct HnswIndex {
    hnsw: Hnsw<'static, f32, DistDot>,
}

/// hnsw_rs's dumps only reload with this many layers.
const HNSW_LAYERS: usize = 16;

impl HnswIndex {
    pub fn new(cfg: &VectorConfig, capacity: usize) -> Self {
        let mut hnsw = Hnsw::new(
            cfg.max_connections,
            capacity.max(1_000),
            HNSW_LAYERS,
            cfg.ef_construction,
            DistDot,
        );
        hnsw.set_extend_candidates(false);
        Self { hnsw }
    }

    /// Loads a dump written by [`VectorIndex::dump`].
    pub fn load(dir: &Path, name: &str) -> anyhow::Result<Self> {
        // the loaded index borrows its loader: one small allocation per
        // load, kept for the life of the process
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, name)));
        let hnsw = io.load_hnsw::<f32, DistDot>()?;
        Ok(Self { hnsw })
    }
}

impl VectorIndex for HnswIndex {
    fn insert(&self, points: &[(&[f32], usize)]) {
        self.hnsw.parallel_insert_slice(&points.to_vec());
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<(usize, f32)> {
        let filter = |id: &usize| keep(*id);
        self.hnsw
            .search_filter(query, k, ef.max(k), Some(&filter))
            .into_iter()
            .map(|n| (n.d_id, n.distance))
            .collect()
    }

    fn dump(&self, dir: &Path, name: &str) -> anyhow::Result<()> {
        self.hnsw.file_dump(dir, name)?;
        Ok(())
    }
}

/// 1 − cosine of two unit vectors (the distance the index uses).
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    DistDot.eval(a, b)
}

/// Scales `v` to unit length; `None` for a zero or non-finite vector.
pub fn normalize(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if !norm.is_finite() || norm < 1e-12 {
        return None;
    }
    for x in &mut v {
        *x = (f64::from(*x) / norm) as f32;
    }
    Some(v)
}

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Meta {
    id: Uuid,
    agent: u32,
    subject: u32,
    session: u32,
    kind: u8,
    alive: bool,
    created: i64,
    expires: i64,
}

/// One tenant's points: a slab of vectors, their metadata, postings by
/// agent and by (agent, subject), and the approximate index over the first
/// `indexed` slots.
#[derive(Default)]
struct Collection {
    vecs: Vec<f32>,
    meta: Vec<Meta>,
    by_id: HashMap<Uuid, u32>,
    names: Vec<String>,
    name_ids: HashMap<String, u32>,
    by_agent: HashMap<u32, Vec<u32>>,
    by_subject: HashMap<(u32, u32), Vec<u32>>,
    dead: usize,
    ann: Option<Arc<dyn VectorIndex>>,
    indexed: usize,
}

impl Collection {
    fn live(&self) -> usize {
        self.meta.len() - self.dead
    }

    fn vector(&self, slot: usize) -> &[f32] {
        &self.vecs[slot * EMBEDDING_DIM..(slot + 1) * EMBEDDING_DIM]
    }

    fn intern(&mut self, s: Option<&str>) -> u32 {
        let Some(s) = s else { return NONE };
        if let Some(id) = self.name_ids.get(s) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.to_owned());
        self.name_ids.insert(s.to_owned(), id);
        id
    }

    fn lookup(&self, s: Option<&str>) -> Option<u32> {
        match s {
            None => Some(NONE),
            Some(s) => self.name_ids.get(s).copied(),
        }
    }

    fn remove(&mut self, id: Uuid) -> bool {
        match self.by_id.remove(&id) {
            Some(slot) => {
                self.meta[slot as usize].alive = false;
                self.dead += 1;
                true
            }
            None => false,
        }
    }

    fn upsert(&mut self, p: &Point) {
        self.remove(p.id);
        let slot = self.meta.len() as u32;
        let agent = self.intern(Some(&p.agent));
        let subject = self.intern(p.subject.as_deref());
        let session = self.intern(p.session.as_deref());
        self.vecs.extend_from_slice(&p.vector);
        self.meta.push(Meta {
            id: p.id,
            agent,
            subject,
            session,
            kind: p.kind,
            alive: true,
            created: p.created_micros,
            expires: p.expires_micros.unwrap_or(i64::MAX),
        });
        self.by_id.insert(p.id, slot);
        self.by_agent.entry(agent).or_default().push(slot);
        self.by_subject
            .entry((agent, subject))
            .or_default()
            .push(slot);
    }

    /// The slots a filter may match, when a posting list narrows them.
    fn candidates(&self, f: &Filter) -> Option<Option<&[u32]>> {
        let Some(agent) = &f.agent else {
            return Some(None);
        };
        let agent = self.lookup(Some(agent))?;
        Some(Some(match &f.subject {
            Some(s) => {
                let s = self.lookup(Some(s))?;
                self.by_subject
                    .get(&(agent, s))
                    .map_or(&[][..], Vec::as_slice)
            }
            None => self.by_agent.get(&agent).map_or(&[][..], Vec::as_slice),
        }))
    }

    /// A predicate over slots for `f`, or `None` when nothing can match.
    fn matcher(&self, f: &Filter) -> Option<impl Fn(usize) -> bool + '_> {
        // a name the collection has never seen matches nothing
        let want = |v: &Option<String>| -> Option<Option<u32>> {
            match v {
                None => Some(None),
                Some(s) => self.name_ids.get(s.as_str()).map(|id| Some(*id)),
            }
        };
        let agent = want(&f.agent)?;
        let subject = want(&f.subject)?;
        let session = want(&f.session)?;
        let (kinds, since, until, now) = (
            f.kinds,
            f.since_micros.unwrap_or(i64::MIN),
            f.until_micros.unwrap_or(i64::MAX),
            f.now_micros,
        );
        Some(move |slot: usize| {
            let m = &self.meta[slot];
            m.alive
                && m.expires > now
                && agent.is_none_or(|a| a == m.agent)
                && subject.is_none_or(|s| s == m.subject)
                && session.is_none_or(|s| s == m.session)
                && (kinds == 0 || kinds & (1 << m.kind) != 0)
                && (since..=until).contains(&m.created)
        })
    }

    fn exact(
        &self,
        query: &[f32],
        k: usize,
        slots: impl Iterator<Item = usize>,
    ) -> Vec<(usize, f32)> {
        let mut best: Vec<(usize, f32)> = slots
            .map(|s| (s, distance(query, self.vector(s))))
            .collect();
        let by_distance =
            |a: &(usize, f32), b: &(usize, f32)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
        if best.len() > k {
            best.select_nth_unstable_by(k, by_distance);
            best.truncate(k);
        }
        best.sort_unstable_by(by_distance);
        best
    }

    fn search(&self, cfg: &VectorConfig, query: &[f32], k: usize, f: &Filter) -> Vec<(usize, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let (Some(keep), Some(candidates)) = (self.matcher(f), self.candidates(f)) else {
            return Vec::new();
        };
        let all: Vec<u32>;
        let candidates: &[u32] = match candidates {
            Some(c) => c,
            None if self.ann.is_none() => {
                return self.exact(query, k, (0..self.meta.len()).filter(|s| keep(*s)));
            }
            None => {
                all = Vec::new();
                &all
            }
        };
        let narrowed = f.agent.is_some();
        let scan = |slots: &[u32]| {
            self.exact(
                query,
                k,
                slots.iter().map(|s| *s as usize).filter(|s| keep(*s)),
            )
        };
        let scan_all = || {
            if narrowed {
                scan(candidates)
            } else {
                self.exact(query, k, (0..self.meta.len()).filter(|s| keep(*s)))
            }
        };
        let extra = f.session.is_some()
            || f.kinds != 0
            || f.since_micros.is_some()
            || f.until_micros.is_some();
        let (listed, threshold) = if narrowed || extra {
            (
                if narrowed {
                    candidates.len()
                } else {
                    self.meta.len()
                },
                cfg.exact_filtered_below,
            )
        } else {
            (self.live(), cfg.exact_below)
        };
        // how many match: exact when it decides the path, else an upper bound
        let matching = if extra || listed < threshold.saturating_mul(2) {
            if narrowed {
                candidates.iter().filter(|s| keep(**s as usize)).count()
            } else {
                (0..self.meta.len()).filter(|s| keep(*s)).count()
            }
        } else {
            listed
        };
        let Some(ann) = self.ann.as_ref().filter(|_| matching >= threshold) else {
            return scan_all();
        };
        // the index covers the first `indexed` slots; the rest are scanned
        let indexed = self.indexed;
        let share = matching as f64 / self.live().max(1) as f64;
        let mut hits = if (0.05..0.999).contains(&share) {
            // a broad filter: checking it inside the walk makes hnsw_rs
            // visit far more nodes than over-fetching a walk that checks
            // only tombstones and filtering after (measured at 200K with a
            // quarter passing: 13 ms against 3)
            let wide = ((k as f64 / share) * 2.0).ceil() as usize;
            let wide = wide.clamp(k, 2_000);
            let mut hits = ann.search(query, wide, cfg.ef_search.max(wide), &|s| {
                s < indexed && self.meta[s].alive
            });
            hits.retain(|(s, _)| keep(*s));
            hits.truncate(k);
            hits
        } else {
            Vec::new()
        };
        if hits.len() < k {
            hits = ann.search(query, k, cfg.ef_search.max(2 * k), &|s| {
                s < indexed && keep(s)
            });
        }
        let tail = self.exact(query, k, (indexed..self.meta.len()).filter(|s| keep(*s)));
        if hits.len() + tail.len() < k.min(matching) {
            // the walk missed matches: never answer with fewer than exist
            return scan_all();
        }
        hits.extend(tail);
        hits.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits
    }

    /// The live points, in slot order, and their old slots.
    fn compacted(&self) -> (Collection, Vec<u32>) {
        let mut c = Collection::default();
        let mut old = Vec::with_capacity(self.live());
        for (slot, m) in self.meta.iter().enumerate() {
            if m.alive {
                old.push(slot as u32);
                c.upsert(&self.point(slot));
            }
        }
        (c, old)
    }

    fn point(&self, slot: usize) -> Point {
        let m = &self.meta[slot];
        let name = |i: u32| (i != NONE).then(|| self.names[i as usize].clone());
        Point {
            id: m.id,
            tenant: Uuid::nil(),
            agent: name(m.agent).unwrap_or_default(),
            subject: name(m.subject),
            session: name(m.session),
            kind: m.kind,
            created_micros: m.created,
            expires_micros: (m.expires != i64::MAX).then_some(m.expires),
            vector: self.vector(slot).to_vec(),
        }
    }
}

/// Every tenant's collection, and which tenant holds each point.
pub struct VectorStore {
    cfg: VectorConfig,
    collections: RwLock<HashMap<Uuid, Arc<RwLock<Collection>>>>,
    tenant_of: RwLock<HashMap<Uuid, Uuid>>,
    /// A background build or rebuild is running.
    building: AtomicBool,
    /// Bumped by every change: what a dump has seen.
    changes: AtomicU64,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// What [`VectorStore::stats`] reports per collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CollectionStats {
    pub points: usize,
    pub tombstones: usize,
    pub indexed: usize,
}

impl VectorStore {
    pub fn new(cfg: VectorConfig) -> Self {
        Self {
            cfg,
            collections: RwLock::new(HashMap::new()),
            tenant_of: RwLock::new(HashMap::new()),
            building: AtomicBool::new(false),
            changes: AtomicU64::new(0),
        }
    }

    fn collection(&self, tenant: Uuid) -> Option<Arc<RwLock<Collection>>> {
        read(&self.collections).get(&tenant).cloned()
    }

    /// A counter every change moves.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Adds or replaces a point (its vector must be unit length).
    pub fn upsert(&self, p: &Point) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        let previous = write(&self.tenant_of).insert(p.id, p.tenant);
        if let Some(t) = previous.filter(|t| *t != p.tenant)
            && let Some(c) = self.collection(t)
        {
            write(&c).remove(p.id);
        }
        let c = write(&self.collections)
            .entry(p.tenant)
            .or_default()
            .clone();
        write(&c).upsert(p);
    }

    pub fn delete(&self, id: Uuid) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        let Some(tenant) = write(&self.tenant_of).remove(&id) else {
            return;
        };
        if let Some(c) = self.collection(tenant) {
            write(&c).remove(id);
        }
    }

    /// Forgets every point (TRUNCATE, a rebuild).
    pub fn clear(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        write(&self.collections).clear();
        write(&self.tenant_of).clear();
    }

    /// The `k` points of `tenant` nearest to `query` (unit length) that pass
    /// `filter`, nearest first: exactly `k` when at least `k` match.
    pub fn search(&self, tenant: Uuid, query: &[f32], k: usize, filter: &Filter) -> Vec<Neighbor> {
        let Some(c) = self.collection(tenant) else {
            return Vec::new();
        };
        let c = read(&c);
        c.search(&self.cfg, query, k, filter)
            .into_iter()
            .map(|(slot, d)| Neighbor {
                id: c.meta[slot].id,
                similarity: 1.0 - d,
            })
            .collect()
    }

    /// The vectors of some points of a tenant (for MMR and dedup).
    pub fn vectors(&self, tenant: Uuid, ids: &[Uuid]) -> HashMap<Uuid, Vec<f32>> {
        let Some(c) = self.collection(tenant) else {
            return HashMap::new();
        };
        let c = read(&c);
        ids.iter()
            .filter_map(|id| {
                c.by_id
                    .get(id)
                    .map(|s| (*id, c.vector(*s as usize).to_vec()))
            })
            .collect()
    }

    pub fn stats(&self) -> HashMap<Uuid, CollectionStats> {
        read(&self.collections)
            .iter()
            .map(|(t, c)| {
                let c = read(c);
                (
                    *t,
                    CollectionStats {
                        points: c.live(),
                        tombstones: c.dead,
                        indexed: c.indexed,
                    },
                )
            })
            .collect()
    }

    /// The tenants with a collection.
    pub fn tenants(&self) -> Vec<Uuid> {
        read(&self.collections).keys().copied().collect()
    }

    /// A tenant's live points.
    pub fn points(&self, tenant: Uuid) -> Vec<Point> {
        let Some(c) = self.collection(tenant) else {
            return Vec::new();
        };
        let c = read(&c);
        (0..c.meta.len())
            .filter(|s| c.meta[*s].alive)
            .map(|s| Point {
                tenant,
                ..c.point(s)
            })
            .collect()
    }

    /// Every point id with its tenant.
    pub fn ids(&self) -> Vec<(Uuid, Uuid)> {
        read(&self.tenant_of)
            .iter()
            .map(|(id, t)| (*id, *t))
            .collect()
    }

    /// Brings every collection's approximate index up to date: builds it
    /// when a collection passes the exact-scan size, adds new points, and
    /// rebuilds a collection whose tombstones passed the share. Blocking and
    /// long; one at a time (a second call while one runs returns at once).
    /// Returns whether it did anything.
    pub fn maintain(&self) -> bool {
        if self.building.swap(true, Ordering::AcqRel) {
            return false;
        }
        let mut worked = false;
        let tenants: Vec<(Uuid, Arc<RwLock<Collection>>)> = read(&self.collections)
            .iter()
            .map(|(t, c)| (*t, c.clone()))
            .collect();
        for (tenant, c) in tenants {
            let (live, dead, len, has_ann) = {
                let g = read(&c);
                (g.live(), g.dead, g.meta.len(), g.ann.is_some())
            };
            if live < self.cfg.exact_below && !has_ann {
                continue;
            }
            if has_ann && dead as f64 > self.cfg.rebuild_share * len as f64 {
                tracing::info!(%tenant, live, tombstones = dead, "rebuilding a vector collection without its tombstones");
                self.rebuild(&c);
                worked = true;
            } else if !has_ann || read(&c).indexed < len {
                self.extend(&c, !has_ann);
                worked = true;
            }
        }
        self.building.store(false, Ordering::Release);
        worked
    }

    /// Adds the unindexed slots to the index (creating it), a chunk at a
    /// time so searches never wait long.
    fn extend(&self, c: &Arc<RwLock<Collection>>, create: bool) {
        if create {
            let cap = read(c).meta.len() * 2;
            let ann: Arc<dyn VectorIndex> = Arc::new(HnswIndex::new(&self.cfg, cap));
            write(c).ann = Some(ann);
        }
        loop {
            let (ann, from, chunk) = {
                let g = read(c);
                let Some(ann) = g.ann.clone() else { return };
                let from = g.indexed;
                let to = g.meta.len().min(from + 10_000);
                if from >= to {
                    return;
                }
                (
                    ann,
                    from,
                    g.vecs[from * EMBEDDING_DIM..to * EMBEDDING_DIM].to_vec(),
                )
            };
            let points: Vec<(&[f32], usize)> = chunk
                .chunks_exact(EMBEDDING_DIM)
                .enumerate()
                .map(|(i, v)| (v, from + i))
                .collect();
            ann.insert(&points);
            let mut g = write(c);
            // a rebuild may have swapped the collection meanwhile
            if g.ann.as_ref().is_some_and(|a| Arc::ptr_eq(a, &ann)) && g.indexed == from {
                g.indexed = from + points.len();
            } else {
                return;
            }
        }
    }

    /// Builds the collection again from its live points and swaps it in;
    /// changes made meanwhile are carried over.
    fn rebuild(&self, c: &Arc<RwLock<Collection>>) {
        let (mut fresh, old_slots, seen) = {
            let g = read(c);
            let (fresh, old) = g.compacted();
            (fresh, old, g.meta.len())
        };
        let ann: Arc<dyn VectorIndex> = Arc::new(HnswIndex::new(&self.cfg, fresh.meta.len() * 2));
        for (i, chunk) in fresh.vecs.chunks(10_000 * EMBEDDING_DIM).enumerate() {
            let points: Vec<(&[f32], usize)> = chunk
                .chunks_exact(EMBEDDING_DIM)
                .enumerate()
                .map(|(j, v)| (v, i * 10_000 + j))
                .collect();
            ann.insert(&points);
        }
        fresh.indexed = fresh.meta.len();
        fresh.ann = Some(ann);
        let mut g = write(c);
        // deletes and updates since the copy: their old slots died
        for (new_slot, old_slot) in old_slots.iter().enumerate() {
            if !g.meta[*old_slot as usize].alive {
                let id = fresh.meta[new_slot].id;
                if fresh.by_id.get(&id) == Some(&(new_slot as u32)) {
                    fresh.remove(id);
                }
            }
        }
        // points added since the copy
        for slot in seen..g.meta.len() {
            if g.meta[slot].alive {
                fresh.upsert(&g.point(slot));
            }
        }
        *g = fresh;
    }

    /// Writes every collection under `dir` with the position it reflects:
    /// `lsn` (the caller makes sure no change after it is applied while
    /// this runs). Points not yet in a collection's index are written too.
    pub fn dump(&self, dir: &Path, lsn: Lsn) -> anyhow::Result<()> {
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let tenants: Vec<(Uuid, Arc<RwLock<Collection>>)> = read(&self.collections)
            .iter()
            .map(|(t, c)| (*t, c.clone()))
            .collect();
        for (tenant, c) in tenants {
            let g = read(&c);
            let name = tenant.to_string();
            let mut w = BufWriter::new(std::fs::File::create(tmp.join(format!("{name}.points")))?);
            write_collection(&mut w, &g)?;
            w.into_inner()?.sync_all()?;
            if let Some(ann) = &g.ann
                && g.indexed > 0
            {
                ann.dump(&tmp, &name)?;
            }
        }
        crate::failpoint::hit("vector_dump")?;
        // the LSN file last: a dump without one is incomplete
        let mut f = std::fs::File::create(tmp.join("LSN"))?;
        std::io::Write::write_all(&mut f, lsn.to_string().as_bytes())?;
        f.sync_all()?;
        std::fs::File::open(&tmp)?.sync_all()?;
        // the previous dump stays whole until the new one is in place (a
        // crash between the renames: recovery renames it back)
        let old = dir.with_file_name(crate::recovery::VECTOR_DIR_OLD);
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(dir, &old)?;
        }
        std::fs::rename(&tmp, dir)?;
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// Loads what [`Self::dump`] wrote; returns its position, or `None` when
    /// there is no complete dump.
    pub fn load(&self, dir: &Path) -> anyhow::Result<Option<Lsn>> {
        let Ok(lsn) = std::fs::read_to_string(dir.join("LSN")) else {
            return Ok(None);
        };
        let lsn: Lsn = lsn.trim().parse()?;
        self.clear();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".points"))
            else {
                continue;
            };
            let tenant: Uuid = name
                .parse()
                .with_context(|| format!("{}", path.display()))?;
            let mut g = read_collection(&mut BufReader::new(std::fs::File::open(&path)?))
                .with_context(|| format!("reading {}", path.display()))?;
            if g.indexed > 0 {
                g.ann = Some(Arc::new(HnswIndex::load(dir, name)?));
            }
            {
                let mut t = write(&self.tenant_of);
                for id in g.by_id.keys() {
                    t.insert(*id, tenant);
                }
            }
            write(&self.collections).insert(tenant, Arc::new(RwLock::new(g)));
        }
        Ok(Some(lsn))
    }
}

const MAGIC: &[u8; 8] = b"CRMVEC01";

fn write_collection(w: &mut impl Write, c: &Collection) -> std::io::Result<()> {
    w.write_all(MAGIC)?;
    let u64w = |w: &mut dyn Write, v: u64| w.write_all(&v.to_le_bytes());
    u64w(w, c.names.len() as u64)?;
    for n in &c.names {
        u64w(w, n.len() as u64)?;
        w.write_all(n.as_bytes())?;
    }
    u64w(w, c.meta.len() as u64)?;
    u64w(w, c.indexed as u64)?;
    for m in &c.meta {
        w.write_all(m.id.as_bytes())?;
        for v in [m.agent, m.subject, m.session] {
            w.write_all(&v.to_le_bytes())?;
        }
        w.write_all(&[m.kind, u8::from(m.alive)])?;
        w.write_all(&m.created.to_le_bytes())?;
        w.write_all(&m.expires.to_le_bytes())?;
    }
    for x in &c.vecs {
        w.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}

fn read_collection(r: &mut impl Read) -> anyhow::Result<Collection> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    anyhow::ensure!(&magic == MAGIC, "not a vector collection dump");
    fn u64r(r: &mut dyn Read) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn u32r(r: &mut dyn Read) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    let mut c = Collection::default();
    for _ in 0..u64r(r)? {
        let mut b = vec![0u8; u64r(r)? as usize];
        r.read_exact(&mut b)?;
        let n = String::from_utf8(b)?;
        c.name_ids.insert(n.clone(), c.names.len() as u32);
        c.names.push(n);
    }
    let len = u64r(r)? as usize;
    c.indexed = u64r(r)? as usize;
    for slot in 0..len as u32 {
        let mut id = [0u8; 16];
        r.read_exact(&mut id)?;
        let (agent, subject, session) = (u32r(r)?, u32r(r)?, u32r(r)?);
        let mut b = [0u8; 2];
        r.read_exact(&mut b)?;
        let created = u64r(r)? as i64;
        let expires = u64r(r)? as i64;
        let m = Meta {
            id: Uuid::from_bytes(id),
            agent,
            subject,
            session,
            kind: b[0],
            alive: b[1] != 0,
            created,
            expires,
        };
        if m.alive {
            c.by_id.insert(m.id, slot);
        } else {
            c.dead += 1;
        }
        c.by_agent.entry(agent).or_default().push(slot);
        c.by_subject.entry((agent, subject)).or_default().push(slot);
        c.meta.push(m);
    }
    let mut bytes = vec![0u8; len * EMBEDDING_DIM * 4];
    r.read_exact(&mut bytes)?;
    c.vecs = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn unit(rng: &mut rand::rngs::StdRng) -> Vec<f32> {
        normalize(
            (0..EMBEDDING_DIM)
                .map(|_| rng.random::<f32>() - 0.5)
                .collect(),
        )
        .unwrap()
    }

    fn point(tenant: Uuid, agent: &str, v: Vec<f32>) -> Point {
        Point {
            id: Uuid::new_v4(),
            tenant,
            agent: agent.into(),
            subject: None,
            session: None,
            kind: 0,
            created_micros: 0,
            expires_micros: None,
            vector: v,
        }
    }

    #[test]
    fn exact_search_filters_tombstones_and_tenants() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let store = VectorStore::new(VectorConfig::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let pts: Vec<Point> = (0..50)
            .map(|i| point(if i % 2 == 0 { a } else { b }, "x", unit(&mut rng)))
            .collect();
        for p in &pts {
            store.upsert(p);
        }
        let q = pts[0].vector.clone();
        let f = Filter::default();
        let hits = store.search(a, &q, 5, &f);
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].id, pts[0].id);
        assert!(hits[0].similarity > 0.999);
        store.delete(pts[0].id);
        let hits = store.search(a, &q, 100, &f);
        assert_eq!(hits.len(), 24);
        assert!(hits.iter().all(|h| h.id != pts[0].id));
        let other = store.search(b, &q, 100, &f);
        assert_eq!(other.len(), 25);
    }

    /// `n` random points of one tenant in a store that builds its graph
    /// from 100 points.
    fn small_store(seed: u64, n: usize) -> (VectorStore, Uuid, Vec<Point>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let store = VectorStore::new(VectorConfig {
            exact_below: 100,
            ..VectorConfig::default()
        });
        let t = Uuid::new_v4();
        let pts: Vec<Point> = (0..n).map(|_| point(t, "x", unit(&mut rng))).collect();
        for p in &pts {
            store.upsert(p);
        }
        (store, t, pts)
    }

    #[test]
    fn dumps_round_trip() {
        let (store, t, pts) = small_store(2, 300);
        store.delete(pts[3].id);
        assert!(store.maintain());
        let dir = std::env::temp_dir().join(format!("crmsearch-vec-{}", Uuid::new_v4()));
        store.dump(&dir, Lsn(42)).unwrap();
        let loaded = VectorStore::new(VectorConfig {
            exact_below: 100,
            ..VectorConfig::default()
        });
        assert_eq!(loaded.load(&dir).unwrap(), Some(Lsn(42)));
        assert_eq!(loaded.stats()[&t], store.stats()[&t]);
        let q = pts[10].vector.clone();
        assert_eq!(
            loaded.search(t, &q, 3, &Filter::default()),
            store.search(t, &q, 3, &Filter::default())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Clustered points (what embeddings of related texts look like).
    fn clustered(rng: &mut rand::rngs::StdRng, n: usize, clusters: usize) -> Vec<Vec<f32>> {
        let centers: Vec<Vec<f32>> = (0..clusters).map(|_| unit(rng)).collect();
        (0..n)
            .map(|i| {
                let c = &centers[i % clusters];
                normalize(
                    c.iter()
                        .map(|x| x + (rng.random::<f32>() - 0.5) * 0.12)
                        .collect(),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn hnsw_recall_at_10_against_exact_with_and_without_filters() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cfg = VectorConfig {
            exact_below: 500,
            exact_filtered_below: 300,
            ef_construction: 64,
            ..VectorConfig::default()
        };
        let store = VectorStore::new(cfg.clone());
        let t = Uuid::new_v4();
        let n = 4_000;
        let vecs = clustered(&mut rng, n, 40);
        let mut pts = Vec::new();
        for (i, v) in vecs.iter().enumerate() {
            let mut p = point(t, ["a", "b", "c", "d"][i % 4], v.clone());
            p.kind = (i % 4) as u8;
            p.subject = Some(format!("s{}", i % 200));
            store.upsert(&p);
            pts.push(p);
        }
        // tombstones: deleted and updated points must never come back
        for p in pts.iter().step_by(50) {
            store.delete(p.id);
        }
        assert!(store.maintain());
        assert_eq!(store.stats()[&t].indexed, n);
        let exact = VectorStore::new(VectorConfig {
            exact_below: usize::MAX,
            exact_filtered_below: usize::MAX,
            ..cfg
        });
        for p in &pts {
            exact.upsert(p);
        }
        for p in pts.iter().step_by(50) {
            exact.delete(p.id);
        }
        let filters = [
            ("none", Filter::default()),
            (
                "agent",
                Filter {
                    agent: Some("a".into()),
                    ..Filter::default()
                },
            ),
            (
                "agent+kind",
                Filter {
                    agent: Some("b".into()),
                    kinds: 0b0010,
                    ..Filter::default()
                },
            ),
            (
                "subject (narrow)",
                Filter {
                    agent: Some("c".into()),
                    subject: Some("s2".into()),
                    ..Filter::default()
                },
            ),
        ];
        for (name, f) in filters {
            let mut found = 0usize;
            let mut want = 0usize;
            for q in clustered(&mut rng, 100, 40) {
                let truth: Vec<Uuid> = exact.search(t, &q, 10, &f).iter().map(|h| h.id).collect();
                let got = store.search(t, &q, 10, &f);
                assert_eq!(
                    got.len(),
                    truth.len(),
                    "{name}: exactly top_k when that many match"
                );
                assert!(
                    got.iter()
                        .all(|h| !pts.iter().step_by(50).any(|p| p.id == h.id)),
                    "{name}: a deleted point came back"
                );
                found += got.iter().filter(|h| truth.contains(&h.id)).count();
                want += truth.len();
            }
            let recall = found as f64 / want as f64;
            println!("recall@10 {name}: {recall:.3}");
            assert!(recall >= 0.95, "{name}: recall@10 {recall}");
        }
    }

    #[test]
    fn a_rebuild_drops_tombstones_and_keeps_changes_made_meanwhile() {
        let (store, t, pts) = small_store(4, 400);
        assert!(store.maintain());
        for p in &pts[..150] {
            store.delete(p.id);
        }
        assert!(store.maintain(), "37 % tombstones: rebuilt");
        let s = store.stats()[&t];
        assert_eq!((s.points, s.tombstones, s.indexed), (250, 0, 250));
        let q = pts[200].vector.clone();
        assert_eq!(
            store.search(t, &q, 1, &Filter::default())[0].id,
            pts[200].id
        );
        assert!(
            store
                .search(t, &pts[0].vector, 250, &Filter::default())
                .iter()
                .all(|h| h.id != pts[0].id)
        );
    }
}
