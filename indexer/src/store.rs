//! The tantivy index on disk: one writer, one reader, commits that carry the
//! applied LSN in their payload — in generations. `index/CURRENT` names the
//! generation that serves (`gen-N`: the tantivy files and the vector dump).
//! A reindex builds the next generation beside it as a *shadow* that
//! receives every change the stream applies, and swaps it in once complete;
//! until then, and after a crash or a cancel, the current one serves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use schema::INDEX_FORMAT_VERSION;
use schema::index::{DocType, IndexSchema};
use tantivy::collector::Count;
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use uuid::Uuid;

use crate::Lsn;
use crate::directory::SoftDirectory;
use crate::vectors::{Point, VectorConfig, VectorStore};

/// One change to the index.
#[derive(Debug, Clone)]
pub enum Op {
    /// Replace the document with this id (delete by id, then add). `fresh`:
    /// no version of it can be in the index (an insert the index has not
    /// seen, a row of a snapshot into an emptied index), so no delete.
    Upsert {
        id: Uuid,
        doc: Box<TantivyDocument>,
        fresh: bool,
        /// A memory's vector (none: the row has no embedding).
        point: Option<Box<Point>>,
    },
    Delete {
        id: Uuid,
    },
    /// Every document of a type (TRUNCATE).
    DeleteAll(DocType),
    /// Every document of a tenant (it left this index's shard).
    DeleteTenant(Uuid),
}

/// One generation of the index: its tantivy index and its vectors.
pub struct Generation {
    pub number: u64,
    pub path: PathBuf,
    pub schema: IndexSchema,
    pub index: Index,
    pub reader: IndexReader,
    /// The memories' vectors, per tenant.
    pub vectors: Arc<VectorStore>,
    dir: SoftDirectory,
    writer: Mutex<Option<IndexWriter<TantivyDocument>>>,
    /// Shared with the generation that replaces this one after a restart of
    /// the pipeline (same folder, reopened from its durable commit).
    versions: Arc<Versions>,
}

/// Where each tenant's visible documents last changed: what a result cache
/// checks its entries against. A version is a WAL position: that of the
/// last transaction, made visible, that changed (or may have changed) the
/// tenant's documents. A change whose tenant the stream does not say (a
/// delete carries only its id, a TRUNCATE none) counts for every tenant, and
/// so does the position the index was opened at (what changed before it is
/// unknown here) — unless its durable commit saved the versions it held
/// (`crmsearch-versions` beside it, written after each durable commit and
/// taken back at open when it names that commit), so that a restarted
/// process keys its tenants as before. Positions are the same in every process following the same
/// Postgres, so two processes whose versions of a tenant are equal show it
/// the same documents: a cache shared between them (Redis) keys by it.
#[derive(Default)]
struct Versions {
    /// The last change of unknown tenant (or the position opened at).
    any: AtomicU64,
    tenants: RwLock<HashMap<Uuid, u64>>,
    /// What the changes applied since the last commit touched.
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// A change of unknown tenant, at this position (0: the commit's).
    any: Option<u64>,
    /// Tenants changed, at the position of their last change (0: the
    /// commit's, for changes from a snapshot).
    tenants: HashMap<Uuid, u64>,
}

impl Pending {
    fn tenant(&mut self, t: Uuid, lsn: u64) {
        let at = self.tenants.entry(t).or_default();
        *at = (*at).max(lsn);
    }

    fn any(&mut self, lsn: u64) {
        self.any = Some(self.any.unwrap_or_default().max(lsn));
    }
}

/// A tenant's documents as a search sees them: equal versions, equal
/// results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    generation: u64,
    any: u64,
    tenant: u64,
}

impl Version {
    /// The WAL position of the tenant's documents as searches see them: the
    /// same in every process following the same Postgres, for the same
    /// documents (within one process [`Version`] also names the
    /// generation).
    pub fn position(&self) -> u64 {
        self.any.max(self.tenant)
    }
}

impl Versions {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The versions once the changes applied so far are committed at
    /// `lsn`, as text (`lsn`, `any`, then a tenant and its position a
    /// line). Taken under the writer's lock before a durable commit, it
    /// describes exactly what that commit holds.
    fn snapshot_at(&self, lsn: Lsn) -> String {
        use std::fmt::Write;
        let pending = self.pending();
        let at = |change: u64| if change == 0 { lsn.0 } else { change };
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        let any = pending
            .any
            .map_or(0, at)
            .max(self.any.load(Ordering::Acquire));
        let mut out = format!("lsn {}\nany {any}\n", lsn.0);
        for (t, v) in tenants.iter() {
            let v = pending.tenants.get(t).map_or(*v, |c| (*v).max(at(*c)));
            let _ = writeln!(out, "{t} {v}");
        }
        for (t, c) in &pending.tenants {
            if !tenants.contains_key(t) {
                let _ = writeln!(out, "{t} {}", at(*c));
            }
        }
        out
    }

    /// Takes the versions of `text` (a [`Self::snapshot_at`]) when it was
    /// taken at `lsn` and these versions are new (a first open): a process
    /// that reopens the index then names its tenants' documents as the one
    /// before it did, so what that one left in a shared cache still serves.
    fn restore(&self, text: &str, lsn: Lsn) -> bool {
        let mut lines = text.lines();
        let field = |line: Option<&str>, name: &str| -> Option<u64> {
            line?.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()
        };
        if field(lines.next(), "lsn") != Some(lsn.0) {
            return false;
        }
        let Some(any) = field(lines.next(), "any") else {
            return false;
        };
        let mut tenants = HashMap::new();
        for line in lines {
            let Some((t, v)) = line.split_once(' ') else {
                return false;
            };
            let (Ok(t), Ok(v)) = (t.parse::<Uuid>(), v.parse::<u64>()) else {
                return false;
            };
            tenants.insert(t, v);
        }
        let mut map = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        if !map.is_empty() || self.any.load(Ordering::Acquire) != 0 {
            return false;
        }
        *map = tenants;
        self.any.store(any, Ordering::Release);
        true
    }

    /// Called after the reader shows the commit at `lsn`: a search that
    /// reads the new version always runs on a searcher with the change.
    fn committed(&self, lsn: Lsn) {
        let Pending { any, tenants } = std::mem::take(&mut *self.pending());
        let at = |change: u64| if change == 0 { lsn.0 } else { change };
        if !tenants.is_empty() {
            let mut map = self.tenants.write().unwrap_or_else(|e| e.into_inner());
            for (t, change) in tenants {
                let v = map.entry(t).or_default();
                *v = (*v).max(at(change));
            }
        }
        if let Some(change) = any {
            self.any.fetch_max(at(change), Ordering::AcqRel);
        }
    }
}

use crate::recovery::FORMAT_FILE;
/// The streaming writer: one thread and a small arena. A commit allocates
/// a segment writer sized by the arena, so small arenas commit faster
/// (measured: 16 ms vs 30 ms per commit with 2 threads and 128 MiB).
const STREAM_THREADS: usize = 1;
const STREAM_HEAP: usize = 24 << 20;
/// The writer for a snapshot: every core, a large arena.
const BULK_HEAP: usize = 256 << 20;

impl Generation {
    /// Opens the generation under `path`, or creates it. One written with
    /// another [`INDEX_FORMAT_VERSION`] is removed: it is derived data and
    /// the indexer rebuilds it from Postgres. Before the writer opens, the
    /// folder is cleaned to what the durable commit names
    /// ([`crate::recovery`]). The caller holds the index folder's lock.
    fn open(path: &Path, number: u64) -> crate::Result<Self> {
        let format_path = path.join(FORMAT_FILE);
        let format = std::fs::read_to_string(&format_path).ok();
        if path.exists()
            && format.as_deref().map(str::trim) != Some(&INDEX_FORMAT_VERSION.to_string())
        {
            tracing::warn!(path = %path.display(), found = ?format, want = INDEX_FORMAT_VERSION, "index format changed; rebuilding the index");
            std::fs::remove_dir_all(path)?;
        }
        Self::open_clean(
            path,
            number,
            Arc::new(VectorStore::new(VectorConfig::default())),
            Arc::default(),
        )
    }

    /// The same generation again from its durable commit, after a failure
    /// of the pipeline: its writer is dropped (its uncommitted and soft
    /// changes with it) and the folder cleaned. The vectors and the
    /// versions carry over: both only ever move forward, and the replay
    /// from the durable position brings the text index back to them.
    fn reopen(&self) -> crate::Result<Self> {
        self.close();
        Self::open_clean(
            &self.path,
            self.number,
            self.vectors.clone(),
            self.versions.clone(),
        )
    }

    fn open_clean(
        path: &Path,
        number: u64,
        vectors: Arc<VectorStore>,
        versions: Arc<Versions>,
    ) -> crate::Result<Self> {
        crate::recovery::clean_to_durable(path)?;
        let schema = IndexSchema::new();
        let dir = SoftDirectory::open(path)?;
        let index = if Index::exists(&dir)? {
            Index::open(dir.clone())?
        } else {
            let index = Index::create(dir.clone(), schema.schema.clone(), Default::default())?;
            std::fs::write(path.join(FORMAT_FILE), INDEX_FORMAT_VERSION.to_string())?;
            index
        };
        schema::analysis::register(&index);
        let writer = open_writer(&index, STREAM_THREADS, STREAM_HEAP)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let g = Self {
            number,
            path: path.to_owned(),
            schema,
            index,
            reader,
            vectors,
            dir,
            writer: Mutex::new(Some(writer)),
            versions,
        };
        // what changed before the position it opens at is unknown here,
        // unless the durable commit left the versions it held
        let opened_at = g.committed_lsn()?.unwrap_or_default();
        let saved = std::fs::read_to_string(path.join(crate::recovery::VERSIONS_FILE));
        let restored = saved.is_ok_and(|text| g.versions.restore(&text, opened_at));
        if !restored {
            g.versions.any.fetch_max(opened_at.0, Ordering::AcqRel);
        }
        Ok(g)
    }

    /// The version of `tenant`'s documents in this generation's reader.
    pub fn version(&self, tenant: Uuid) -> Version {
        let v = &self.versions;
        let t = v
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
            .copied()
            .unwrap_or(0);
        Version {
            generation: self.number,
            any: v.any.load(Ordering::Acquire),
            tenant: t,
        }
    }

    fn save_versions(&self, text: &str) -> std::io::Result<()> {
        let path = self.path.join(crate::recovery::VERSIONS_FILE);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    }

    /// Where this generation dumps its vector collections.
    pub fn vector_dir(&self) -> PathBuf {
        self.path.join(crate::recovery::VECTOR_DIR)
    }

    fn writer(&self) -> MutexGuard<'_, Option<IndexWriter<TantivyDocument>>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the writer (uncommitted changes are lost: commit first).
    fn reopen_writer(&self, threads: usize, heap: usize) -> anyhow::Result<()> {
        let mut w = self.writer();
        drop(w.take()); // releases the index lock...
        *w = Some(open_writer(&self.index, threads, heap)?);
        Ok(())
    }

    /// Switches to a writer for bulk indexing (a snapshot); call
    /// [`Self::streaming_writer`] after its commit.
    pub fn bulk_writer(&self) -> anyhow::Result<()> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        self.reopen_writer(threads, BULK_HEAP)?;
        // no background merges while loading: one merge of everything after
        // (a background merge racing it fails it)
        if let Some(w) = self.writer().as_ref() {
            w.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        }
        Ok(())
    }

    pub fn streaming_writer(&self) -> anyhow::Result<()> {
        self.reopen_writer(STREAM_THREADS, STREAM_HEAP)
    }

    /// Whether merging every segment into one is worth it now (see
    /// [`crate::merging`]).
    pub fn compaction_due(&self) -> anyhow::Result<bool> {
        Ok(crate::merging::worth_compacting(
            &self.index.searchable_segment_metas()?,
        ))
    }

    /// Merges every segment into one when [`Self::compaction_due`], and
    /// waits for it without holding the writer: changes go on being applied
    /// and committed meanwhile. Blocking. Whether it merged.
    pub fn compact(&self) -> anyhow::Result<bool> {
        let metas = self.index.searchable_segment_metas()?;
        if !crate::merging::worth_compacting(&metas) {
            return Ok(false);
        }
        let ids: Vec<_> = metas.iter().map(|m| m.id()).collect();
        let merging = match self.writer().as_mut() {
            Some(w) => w.merge(&ids),
            None => return Ok(false),
        };
        merging.wait()?;
        self.reader.reload()?;
        Ok(true)
    }

    /// The LSN of the last commit (durable at open; the last soft commit
    /// afterwards).
    pub fn committed_lsn(&self) -> anyhow::Result<Option<Lsn>> {
        let meta = self.index.load_metas()?;
        Ok(meta.payload.as_deref().and_then(|p| p.parse().ok()))
    }

    /// Applies `ops` of the transaction at `lsn` (`Lsn(0)`: of a snapshot,
    /// visible as of its commit).
    pub fn apply(&self, ops: Vec<Op>, lsn: Lsn) -> anyhow::Result<()> {
        self.apply_to(ops, lsn, true)
    }

    /// `vectors`: apply the vector side too (false while replaying what
    /// the shared vector collections already hold, see [`IndexStore::recover`]).
    fn apply_to(&self, ops: Vec<Op>, lsn: Lsn, vectors: bool) -> anyhow::Result<()> {
        let guard = self.writer();
        let w = guard
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no index writer"))?;
        let f = &self.schema.fields;
        let mut pending = self.versions.pending();
        for op in ops {
            match op {
                Op::Upsert {
                    id,
                    doc,
                    fresh,
                    point,
                } => {
                    match doc
                        .get_first(f.tenant_id)
                        .and_then(|v| v.as_str())
                        .and_then(|t| t.parse().ok())
                    {
                        Some(t) => pending.tenant(t, lsn.0),
                        None => pending.any(lsn.0),
                    }
                    // deletes cost every commit a pass over every segment
                    if !fresh {
                        w.delete_term(Term::from_field_text(f.id, &id.to_string()));
                    }
                    w.add_document(*doc)?;
                    match point {
                        Some(p) if vectors => self.vectors.upsert(&p),
                        None if vectors => self.vectors.delete(id),
                        _ => {}
                    }
                }
                Op::Delete { id } => {
                    pending.any(lsn.0);
                    w.delete_term(Term::from_field_text(f.id, &id.to_string()));
                    if vectors {
                        self.vectors.delete(id);
                    }
                }
                Op::DeleteAll(t) => {
                    pending.any(lsn.0);
                    w.delete_term(Term::from_field_text(f.doc_type, t.as_str()));
                    if t == DocType::Memory && vectors {
                        self.vectors.clear();
                    }
                }
                Op::DeleteTenant(t) => {
                    pending.tenant(t, lsn.0);
                    w.delete_term(Term::from_field_text(f.tenant_id, &t.to_string()));
                    if vectors {
                        self.vectors.delete_tenant(t);
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes every document (before a rebuild).
    pub fn clear(&self) -> anyhow::Result<()> {
        self.writer()
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no index writer"))?
            .delete_all_documents()?;
        self.versions.pending().any(0);
        self.vectors.clear();
        Ok(())
    }

    /// Commits with `lsn` in the payload and makes the commit visible.
    /// `durable`: fsynced before `meta.json` reaches the disk. Blocking.
    pub fn commit(&self, lsn: Lsn, durable: bool) -> anyhow::Result<std::time::Duration> {
        self.commit_and_publish(lsn, durable, true)
    }

    /// `publish`: move the tenants' versions (false while this generation
    /// catches up behind the one that serves: searches do not read it yet).
    fn commit_and_publish(
        &self,
        lsn: Lsn,
        durable: bool,
        publish: bool,
    ) -> anyhow::Result<std::time::Duration> {
        crate::failpoint::hit(if durable {
            "durable_commit"
        } else {
            "soft_commit"
        })?;
        let started = Instant::now();
        let mut guard = self.writer();
        let w = guard
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no index writer"))?;
        let payload = lsn.to_string();
        // the versions this commit holds (no change is applied while the
        // writer's lock is held)
        let versions = (durable && publish).then(|| self.versions.snapshot_at(lsn));
        let mut run = || -> tantivy::Result<u64> {
            let mut prepared = w.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()
        };
        if durable {
            self.dir.durable(run)
        } else {
            run()
        }?;
        drop(guard);
        if let Some(text) = versions {
            // after the commit is durable: a file naming a commit the disk
            // does not hold is ignored at open (its `lsn` differs), and one
            // not written costs a restart its cache keys, nothing else
            if let Err(e) = self.save_versions(&text) {
                tracing::warn!(error = %e, "cannot save the tenants' versions beside the commit");
            }
        }
        self.reader.reload()?;
        if publish {
            self.versions.committed(lsn);
        }
        Ok(started.elapsed())
    }

    /// Merges every segment into one and waits (after a snapshot: a search
    /// costs per segment). The merge is visible at once and durable with
    /// the next durable commit.
    pub fn merge_all(&self) -> anyhow::Result<()> {
        // a merge the writer started on its own may retire some of the
        // segments listed: list them again and retry
        let mut attempt = 0;
        loop {
            let ids = self.index.searchable_segment_ids()?;
            if ids.len() <= 1 {
                return Ok(());
            }
            let mut guard = self.writer();
            let w = guard
                .as_mut()
                .ok_or_else(|| anyhow::anyhow!("no index writer"))?;
            crate::failpoint::hit("merge")?;
            let merged = w.merge(&ids).wait();
            drop(guard);
            match merged {
                Ok(_) => {
                    self.reader.reload()?;
                    return Ok(());
                }
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "merging into one segment failed; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Fsyncs written files ahead of the next durable commit (see
    /// [`SoftDirectory::presync`]). Blocking.
    pub fn presync(&self) -> std::io::Result<usize> {
        self.dir.presync()
    }

    /// Searchable documents of a type (all tenants).
    pub fn count(&self, t: DocType) -> u64 {
        count(&self.reader.searcher(), &self.schema, t)
    }

    /// Searchable documents of a type in one tenant.
    pub fn count_in(&self, tenant: Uuid, t: DocType) -> u64 {
        let f = &self.schema.fields;
        let term = |field, text: &str| -> Box<dyn tantivy::query::Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, text),
                IndexRecordOption::Basic,
            ))
        };
        let q = tantivy::query::BooleanQuery::intersection(vec![
            term(f.tenant_id, &tenant.to_string()),
            term(f.doc_type, t.as_str()),
        ]);
        self.reader.searcher().search(&q, &Count).unwrap_or(0) as u64
    }

    /// Drops the writer, as a failed indexing thread leaves it.
    #[cfg(test)]
    pub(crate) fn close_writer_for_tests(&self) {
        self.close();
    }

    /// Drops the writer (and its lock); the generation stays readable.
    fn close(&self) {
        drop(self.writer().take());
    }

    pub fn segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    /// The segments searches read, by id.
    pub fn segment_ids(&self) -> Vec<tantivy::index::SegmentId> {
        self.reader
            .searcher()
            .segment_readers()
            .iter()
            .map(|s| s.segment_id())
            .collect()
    }
}

/// Opens `index`'s writer, waiting for the threads of a merge that just
/// finished (or of a writer just dropped) to let go of its lock.
fn open_writer(
    index: &Index,
    threads: usize,
    heap: usize,
) -> tantivy::Result<IndexWriter<TantivyDocument>> {
    let started = Instant::now();
    loop {
        match index.writer_with_num_threads(threads, heap) {
            Ok(w) => {
                w.set_merge_policy(crate::merging::streaming_policy());
                return Ok(w);
            }
            Err(tantivy::TantivyError::LockFailure(..))
                if started.elapsed() < std::time::Duration::from_secs(10) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The index: the generation that serves, the one a reindex builds, and
/// the one a restarted pipeline catches up in.
pub struct IndexStore {
    pub schema: IndexSchema,
    root: PathBuf,
    current: RwLock<Arc<Generation>>,
    shadow: Mutex<Option<Shadow>>,
    catching_up: Mutex<Option<CatchingUp>>,
    /// The position of the last transaction applied (see [`Self::apply`]):
    /// a commit made outside the committer claims at least this, since the
    /// writer already holds it.
    last_applied: AtomicU64,
    /// Held for the life of the store: one process per index folder.
    _lock: std::fs::File,
}

/// A generation being built by a reindex: it receives every change applied
/// to the current one — held back while its snapshot loads, applied
/// directly after.
struct Shadow {
    generation: Arc<Generation>,
    held: Option<Vec<Op>>,
}

/// The current generation reopened from its durable commit after a failure
/// of the pipeline. It receives the replay while the current one, frozen at
/// what searches have seen, serves; it replaces it once the replay reaches
/// that position, so a search never sees the index go back.
struct CatchingUp {
    generation: Arc<Generation>,
    /// What the serving generation shows (its last commit).
    serves: Lsn,
}

const CURRENT: &str = "CURRENT";
const CATCHING_UP: &str =
    "the indexer is catching up after a restart of its pipeline; try again in a few seconds";
const LOCK_FILE: &str = "crmsearch.lock";

fn generation_dir(root: &Path, n: u64) -> PathBuf {
    root.join(format!("gen-{n}"))
}

/// Takes the index folder's lock, or says who holds it.
fn lock_root(root: &Path) -> crate::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(crate::Error::Locked(root.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

impl IndexStore {
    /// Opens the index under `root` at the generation `CURRENT` names (or a
    /// first one), removing generations a crashed or cancelled reindex left
    /// and, in the one that serves, the files its durable commit does not
    /// name. Fails with [`crate::Error::Locked`] while another process has it.
    pub fn open(root: &Path) -> crate::Result<Self> {
        std::fs::create_dir_all(root)?;
        let lock = lock_root(root)?;
        let named: Option<u64> = std::fs::read_to_string(root.join(CURRENT))
            .ok()
            .and_then(|s| s.trim().strip_prefix("gen-")?.parse().ok());
        let number = named.unwrap_or(1);
        for entry in std::fs::read_dir(root)? {
            let path = entry?.path();
            let stray = if path.is_dir() {
                path != generation_dir(root, number)
            } else {
                // a CURRENT.tmp of a swap cut off
                let name = path.file_name();
                let kept = [
                    LOCK_FILE,
                    crate::pipeline::slot::SLOT_FILE,
                    crate::pipeline::slot::OWNER_FILE,
                ];
                !kept.iter().any(|k| name == Some(k.as_ref()))
                    && (named.is_none() || name != Some(CURRENT.as_ref()))
            };
            if stray {
                tracing::warn!(path = %path.display(), "removing what no current index generation names");
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        let generation = Generation::open(&generation_dir(root, number), number)?;
        if named.is_none() {
            write_current(root, number)?;
        }
        Ok(Self {
            schema: IndexSchema::new(),
            root: root.to_owned(),
            current: RwLock::new(Arc::new(generation)),
            shadow: Mutex::new(None),
            catching_up: Mutex::new(None),
            last_applied: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// The generation that serves.
    pub fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn catching_up(&self) -> MutexGuard<'_, Option<CatchingUp>> {
        self.catching_up.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation the pipeline writes: the current one, or the one
    /// catching up behind it after a restart.
    pub fn writing(&self) -> Arc<Generation> {
        match self.catching_up().as_ref() {
            Some(c) => c.generation.clone(),
            None => self.current(),
        }
    }

    /// Whether a restarted pipeline is still replaying up to what searches
    /// already see (and up to where).
    pub fn catching_up_to(&self) -> Option<Lsn> {
        self.catching_up().as_ref().map(|c| c.serves)
    }

    pub fn searcher(&self) -> tantivy::Searcher {
        self.current().reader.searcher()
    }

    pub fn vectors(&self) -> Arc<VectorStore> {
        self.current().vectors.clone()
    }

    pub fn generation(&self) -> u64 {
        self.current().number
    }

    /// The version of `tenant`'s documents that searches see now. Read it
    /// before taking the searcher: the result is then at least as new as
    /// the version (a commit in between makes it newer, under a version no
    /// later read returns again).
    pub fn version(&self, tenant: Uuid) -> Version {
        self.current().version(tenant)
    }

    fn shadow(&self) -> MutexGuard<'_, Option<Shadow>> {
        self.shadow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The position of the written generation's last commit.
    pub fn committed_lsn(&self) -> anyhow::Result<Option<Lsn>> {
        self.writing().committed_lsn()
    }

    /// After a failure of the pipeline: drops a reindex in progress, reopens
    /// the written generation from its durable commit (its folder cleaned to
    /// what that commit names) and returns that commit's position, where the
    /// stream resumes. The generation that serves goes on serving what it
    /// showed until the replay reaches it. Blocking.
    pub fn recover(&self) -> crate::Result<Option<Lsn>> {
        self.cancel_shadow();
        let mut catching = self.catching_up();
        let (writing, serves) = match catching.take() {
            Some(c) => (c.generation, c.serves),
            None => {
                let current = self.current();
                let serves = current.committed_lsn()?.unwrap_or_default();
                (current, serves)
            }
        };
        let fresh = Arc::new(writing.reopen()?);
        let durable = fresh.committed_lsn()?;
        tracing::info!(
            generation = fresh.number,
            durable = %durable.unwrap_or_default(),
            serves = %serves,
            "index reopened from its durable commit"
        );
        if durable.unwrap_or_default() >= serves {
            drop(catching);
            self.promote(fresh, durable.unwrap_or_default());
        } else {
            *catching = Some(CatchingUp {
                generation: fresh,
                serves,
            });
        }
        Ok(durable)
    }

    /// Makes `g` (the same generation, reopened) the one that serves.
    /// `lsn`: the position it was committed at.
    fn promote(&self, g: Arc<Generation>, lsn: Lsn) {
        let n = g.number;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = g;
        self.current().versions.committed(lsn);
        tracing::info!(generation = n, "the reopened index caught up and serves");
    }

    pub fn bulk_writer(&self) -> anyhow::Result<()> {
        self.writing().bulk_writer()
    }

    pub fn streaming_writer(&self) -> anyhow::Result<()> {
        self.writing().streaming_writer()
    }

    /// Applies to the written generation, and to a shadow when a reindex
    /// runs (as replacements: the shadow's snapshot may hold any version).
    /// `lsn`: the position of the transaction the ops come from.
    pub fn apply(&self, ops: Vec<Op>, lsn: Lsn) -> anyhow::Result<()> {
        let mut shadow = self.shadow();
        self.last_applied.fetch_max(lsn.0, Ordering::AcqRel);
        if let Some(s) = shadow.as_mut() {
            let copies = ops.iter().cloned().map(Op::replacing);
            match s.held.as_mut() {
                Some(held) => held.extend(copies),
                None => s.generation.apply(copies.collect(), lsn)?,
            }
        }
        drop(shadow);
        let catching = self.catching_up();
        match catching.as_ref() {
            // the shared vector collections already hold what was visible
            Some(c) => c.generation.apply_to(ops, lsn, lsn > c.serves),
            None => {
                drop(catching);
                self.current().apply(ops, lsn)
            }
        }
    }

    /// Commits the written generation at `lsn`; a generation catching up
    /// replaces the current one once `lsn` reaches what that one showed.
    pub fn commit(&self, lsn: Lsn, durable: bool) -> anyhow::Result<std::time::Duration> {
        let mut catching = self.catching_up();
        let Some(c) = catching.as_ref() else {
            drop(catching);
            return self.current().commit(lsn, durable);
        };
        let took = c.generation.commit_and_publish(lsn, durable, false)?;
        if lsn >= c.serves
            && let Some(c) = catching.take()
        {
            drop(catching);
            self.promote(c.generation, lsn);
        }
        Ok(took)
    }

    /// Makes changes applied outside the stream (a repair, the start of a
    /// reindex) visible at `lsn`, the position searches see. Refused while
    /// a restarted pipeline catches up: its generation does not hold
    /// everything up to `lsn` yet, and the commit would say it does.
    pub fn commit_visible(&self, lsn: Lsn) -> anyhow::Result<()> {
        // (locks in the order apply and swap take them: shadow, catching)
        let _shadow = self.shadow();
        let catching = self.catching_up();
        anyhow::ensure!(catching.is_none(), CATCHING_UP);
        // the committer may have applied later transactions not committed
        // yet: the payload must not say less than the writer holds (a
        // replay from it would add their inserts twice)
        let lsn = lsn.max(Lsn(self.last_applied.load(Ordering::Acquire)));
        self.current().commit(lsn, false)?;
        Ok(())
    }

    pub fn clear(&self) -> anyhow::Result<()> {
        self.writing().clear()
    }

    pub fn merge_all(&self) -> anyhow::Result<()> {
        self.writing().merge_all()
    }

    /// Whether the serving generation would gain from a compaction (not
    /// while a restarted pipeline catches up: that generation is replaced).
    pub fn compaction_due(&self) -> bool {
        self.catching_up_to().is_none() && self.current().compaction_due().unwrap_or(false)
    }

    /// See [`Generation::compact`].
    pub fn compact(&self) -> anyhow::Result<bool> {
        self.current().compact()
    }

    pub fn presync(&self) -> std::io::Result<usize> {
        self.writing().presync()
    }

    pub fn count(&self, t: DocType) -> u64 {
        self.current().count(t)
    }

    pub fn count_in(&self, tenant: Uuid, t: DocType) -> u64 {
        self.current().count_in(tenant, t)
    }

    pub fn segments(&self) -> usize {
        self.current().segments()
    }

    /// See [`Generation::segment_ids`].
    pub fn segment_ids(&self) -> Vec<tantivy::index::SegmentId> {
        self.current().segment_ids()
    }

    /// Starts a reindex: an empty next generation that holds back every
    /// change applied from now on. Fails when one is already being built.
    /// Refused while a restarted pipeline catches up (its replay is older
    /// than any snapshot the shadow would load).
    pub fn begin_shadow(&self) -> anyhow::Result<Arc<Generation>> {
        let mut shadow = self.shadow();
        anyhow::ensure!(shadow.is_none(), "a reindex is already running");
        anyhow::ensure!(self.catching_up().is_none(), CATCHING_UP);
        let number = self.generation() + 1;
        let path = generation_dir(&self.root, number);
        let _ = std::fs::remove_dir_all(&path);
        let generation = Arc::new(Generation::open(&path, number)?);
        generation.bulk_writer()?;
        *shadow = Some(Shadow {
            generation: generation.clone(),
            held: Some(Vec::new()),
        });
        Ok(generation)
    }

    /// The shadow's snapshot is in: applies what was held back; from now on
    /// changes go to it directly.
    pub fn shadow_loaded(&self) -> anyhow::Result<()> {
        let mut shadow = self.shadow();
        let s = shadow
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no reindex is running (the indexer restarted?)"))?;
        if let Some(held) = s.held.take() {
            s.generation.apply(held, Lsn(0))?;
        }
        Ok(())
    }

    /// Makes the shadow the current generation: commits it durably at `lsn`
    /// (every change up to it has been applied to it), names it in
    /// `CURRENT`, and removes the old one.
    pub fn swap_shadow(&self, lsn: Lsn) -> anyhow::Result<u64> {
        let mut shadow = self.shadow();
        let s = shadow
            .take()
            .ok_or_else(|| anyhow::anyhow!("no reindex is running (the indexer restarted?)"))?;
        anyhow::ensure!(s.held.is_none(), "the reindex snapshot is not loaded yet");
        // every transaction applied so far is in the shadow (applies take
        // the shadow's lock, held here): its payload says so, or a replay
        // after a crash would add those inserts again
        let lsn = lsn.max(Lsn(self.last_applied.load(Ordering::Acquire)));
        s.generation.commit(lsn, true)?;
        write_current(&self.root, s.generation.number)?;
        // (the moment a crash leaves two whole generations: CURRENT decides)
        crate::failpoint::hit("swap_generation")?;
        // a generation catching up is the old one too
        if let Some(c) = self.catching_up().take() {
            c.generation.close();
        }
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            s.generation,
        );
        drop(shadow);
        let number = self.generation();
        tracing::info!(generation = number, %lsn, "the new index generation serves");
        // searches still holding the old one keep their files open
        old.close();
        if let Err(e) = std::fs::remove_dir_all(&old.path) {
            tracing::warn!(path = %old.path.display(), error = %e, "cannot remove the old index generation");
        }
        Ok(number)
    }

    /// Drops a reindex in progress and its files; the current one serves on.
    pub fn cancel_shadow(&self) {
        if let Some(s) = self.shadow().take() {
            s.generation.close();
            let _ = std::fs::remove_dir_all(&s.generation.path);
            tracing::warn!(generation = s.generation.number, "reindex cancelled");
        }
    }
}

/// Carries every tenant's documents and vectors but `except`'s from one
/// generation into another (a one-tenant reindex): documents are rebuilt
/// from their stored records. Blocking; returns the documents copied.
pub fn copy_tenants_except(
    from: &Generation,
    to: &Generation,
    except: Uuid,
) -> anyhow::Result<u64> {
    use tantivy::collector::DocSetCollector;
    use tantivy::schema::Value;
    let searcher = from.reader.searcher();
    let f = &from.schema.fields;
    let except_text = except.to_string();
    let mut copied = 0u64;
    for t in [DocType::Company, DocType::Contact, DocType::Memory] {
        let q = TermQuery::new(
            Term::from_field_text(f.doc_type, t.as_str()),
            IndexRecordOption::Basic,
        );
        let mut addrs: Vec<tantivy::DocAddress> =
            searcher.search(&q, &DocSetCollector)?.into_iter().collect();
        addrs.sort();
        let mut ops = Vec::with_capacity(4096);
        let mut tenant_buf = String::new();
        for a in addrs {
            let fast = searcher.segment_reader(a.segment_ord).fast_fields();
            let Some(tenants) = fast.str("tenant_id")? else {
                continue;
            };
            let Some(ord) = tenants.term_ords(a.doc_id).next() else {
                continue;
            };
            tenant_buf.clear();
            tenants.ord_to_str(ord, &mut tenant_buf)?;
            if tenant_buf == except_text {
                continue;
            }
            let tenant: Uuid = tenant_buf.parse()?;
            let doc: TantivyDocument = searcher.doc(a)?;
            let source = doc
                .get_first(f.source)
                .and_then(|v| v.as_str())
                .unwrap_or("{}");
            let (id, rebuilt) = match t {
                DocType::Contact => {
                    let c: schema::Contact = serde_json::from_str(source)?;
                    (c.id, to.schema.contact_doc(tenant, &c))
                }
                DocType::Company => {
                    let c: schema::Company = serde_json::from_str(source)?;
                    (c.id, to.schema.company_doc(tenant, &c))
                }
                DocType::Memory => {
                    let m: schema::Memory = serde_json::from_str(source)?;
                    let lsn = fast.u64("lsn")?.first(a.doc_id).unwrap_or(0);
                    (m.id, to.schema.memory_doc(tenant, &m, lsn))
                }
            };
            ops.push(Op::Upsert {
                id,
                doc: Box::new(rebuilt),
                fresh: true,
                point: None,
            });
            if ops.len() == 4096 {
                copied += ops.len() as u64;
                to.apply(std::mem::take(&mut ops), Lsn(0))?;
            }
        }
        copied += ops.len() as u64;
        to.apply(ops, Lsn(0))?;
    }
    for tenant in from.vectors.tenants().into_iter().filter(|t| *t != except) {
        for p in from.vectors.points(tenant) {
            to.vectors.upsert(&p);
        }
    }
    Ok(copied)
}

/// The folder of the generation `CURRENT` names under `root`, if any.
pub fn current_generation_dir(root: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(root.join(CURRENT)).ok()?;
    let dir = root.join(name.trim());
    dir.is_dir().then_some(dir)
}

/// Names generation `n` current, atomically.
fn write_current(root: &Path, n: u64) -> anyhow::Result<()> {
    let tmp = root.join("CURRENT.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut f, format!("gen-{n}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, root.join(CURRENT))?;
    std::fs::File::open(root)?.sync_all()?;
    Ok(())
}

impl Op {
    /// The same change for an index that may hold any version of the row.
    fn replacing(self) -> Op {
        match self {
            Op::Upsert { id, doc, point, .. } => Op::Upsert {
                id,
                doc,
                fresh: false,
                point,
            },
            other @ (Op::Delete { .. } | Op::DeleteAll(_) | Op::DeleteTenant(_)) => other,
        }
    }
}

/// Documents of a type a searcher sees (all tenants).
pub fn count(searcher: &tantivy::Searcher, schema: &IndexSchema, t: DocType) -> u64 {
    let q = TermQuery::new(
        Term::from_field_text(schema.fields.doc_type, t.as_str()),
        IndexRecordOption::Basic,
    );
    searcher.search(&q, &Count).unwrap_or(0) as u64
}
