//! A tantivy directory that separates *visible* commits from *durable* ones,
//! the way Elasticsearch separates refresh from flush.
//!
//! A tantivy commit writes the new segment files, then `meta.json`, and
//! fsyncs both: about 100 ms on these disks. Here an ordinary commit
//! ("soft") writes segment files without fsync and keeps `meta.json` in
//! memory: readers reload from it at once, so changes are searchable in
//! milliseconds, while the `meta.json` on disk still names only segments of
//! the last durable commit. A durable commit ("hard", see
//! [`SoftDirectory::durable`]) first fsyncs every file written since the
//! last durable commit and the folder, and only then writes `meta.json` to
//! disk (atomically, fsynced).
//!
//! So after a crash of the process or of the machine, the index opens from
//! the last durable `meta.json`, whose segments were all fsynced before it
//! was written, with the LSN it was committed with in its payload. Files a
//! durable `meta.json` names are never deleted before a newer durable
//! `meta.json` replaces it: deletions are deferred to the next durable
//! commit. Files written after the last durable commit are orphans after a
//! crash; tantivy's garbage collection removes them at the next start.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, TerminatingWrite,
    WatchCallback, WatchHandle, WritePtr,
};

const META: &str = "meta.json";

#[derive(Default, Debug)]
struct State {
    /// `meta.json` as of the last commit, soft or hard.
    meta: Option<Vec<u8>>,
    /// Files written (and terminated) since the last durable commit.
    unsynced: HashSet<PathBuf>,
    /// Deletions asked for since the last durable commit.
    deferred: Vec<PathBuf>,
    /// The next `meta.json` write is a durable commit.
    durable_next: bool,
}

#[derive(Clone, Debug)]
pub struct SoftDirectory {
    inner: MmapDirectory,
    root: PathBuf,
    state: Arc<Mutex<State>>,
}

impl SoftDirectory {
    pub fn open(root: &Path) -> tantivy::Result<Self> {
        std::fs::create_dir_all(root)?;
        let inner = MmapDirectory::open(root)?;
        Ok(Self {
            inner,
            root: root.to_owned(),
            state: Arc::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the commit run inside `f` durable: its `meta.json` reaches the
    /// disk only after every file it names (and the folder) is fsynced.
    pub fn durable<T>(&self, f: impl FnOnce() -> T) -> T {
        self.state().durable_next = true;
        let out = f();
        self.state().durable_next = false;
        out
    }

    /// Fsyncs the files written so far without holding up commits, so the
    /// next durable commit has little left to sync. Returns how many.
    pub fn presync(&self) -> io::Result<usize> {
        let files: Vec<PathBuf> = self.state().unsynced.iter().cloned().collect();
        for path in &files {
            match File::open(self.root.join(path)) {
                Ok(f) => f.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let mut st = self.state();
        for path in &files {
            st.unsynced.remove(path);
        }
        Ok(files.len())
    }

    fn fsync_unsynced(&self, state: &mut State) -> io::Result<()> {
        for path in state.unsynced.drain() {
            match File::open(self.root.join(&path)) {
                Ok(f) => f.sync_all()?,
                // written, then merged away and deleted before this commit
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        File::open(&self.root)?.sync_all()
    }
}

/// A file writer that flushes on terminate but leaves the fsync to the next
/// durable commit.
struct DeferredSyncWriter {
    file: File,
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

impl Write for DeferredSyncWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TerminatingWrite for DeferredSyncWriter {
    fn terminate_ref(&mut self, _: AntiCallToken) -> io::Result<()> {
        self.file.flush()?;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.unsynced.insert(self.path.clone());
        Ok(())
    }
}

impl Directory for SoftDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.inner.get_file_handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        let mut st = self.state();
        // a file no durable meta.json can name may go at once
        if st.unsynced.remove(path) {
            drop(st);
            return self.inner.delete(path);
        }
        st.deferred.push(path.to_owned());
        Ok(())
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        if path == Path::new(META) && self.state().meta.is_some() {
            return Ok(true);
        }
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let full = self.root.join(path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&full)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    OpenWriteError::FileAlreadyExists(path.to_owned())
                } else {
                    OpenWriteError::wrap_io_error(e, path.to_owned())
                }
            })?;
        let writer = DeferredSyncWriter {
            file,
            path: path.to_owned(),
            state: self.state.clone(),
        };
        Ok(BufWriter::new(Box::new(writer)))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        if path == Path::new(META)
            && let Some(meta) = &self.state().meta
        {
            return Ok(meta.clone());
        }
        self.inner.atomic_read(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        if path != Path::new(META) {
            // `.managed.json`: its loss only leaks files until the next
            // garbage collection; write it through without an fsync
            let tmp = self.root.join(format!("{}.tmp", path.display()));
            std::fs::write(&tmp, data)?;
            return std::fs::rename(tmp, self.root.join(path));
        }
        let mut st = self.state();
        st.meta = Some(data.to_vec());
        if !st.durable_next {
            return Ok(());
        }
        self.fsync_unsynced(&mut st)?;
        self.inner.atomic_write(path, data)?;
        self.inner.sync_directory()?;
        // the new durable meta.json names none of the files deleted so far
        let deferred = std::mem::take(&mut st.deferred);
        drop(st);
        for file in deferred {
            match self.inner.delete(&file) {
                Ok(()) | Err(DeleteError::FileDoesNotExist(_)) => {}
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "cannot delete an index file")
                }
            }
        }
        Ok(())
    }

    fn sync_directory(&self) -> io::Result<()> {
        // done by the durable meta.json write
        Ok(())
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(watch_callback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::schema::{STRING, Schema};
    use tantivy::{Index, IndexWriter, ReloadPolicy, TantivyDocument};

    fn schema() -> (Schema, tantivy::schema::Field) {
        let mut b = Schema::builder();
        let f = b.add_text_field("id", STRING);
        (b.build(), f)
    }

    #[test]
    fn soft_commits_are_visible_and_only_durable_ones_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("softdir-{}", uuid::Uuid::new_v4()));
        let (schema, f) = schema();
        {
            let d = SoftDirectory::open(&dir).unwrap();
            let index = Index::create(d.clone(), schema.clone(), Default::default()).unwrap();
            let mut w: IndexWriter<TantivyDocument> =
                index.writer_with_num_threads(1, 15_000_000).unwrap();
            let reader = index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()
                .unwrap();
            let add = |w: &mut IndexWriter<TantivyDocument>, v: &str| {
                let mut doc = TantivyDocument::default();
                doc.add_text(f, v);
                w.add_document(doc).unwrap();
            };
            add(&mut w, "a");
            d.durable(|| {
                let mut c = w.prepare_commit().unwrap();
                c.set_payload("durable-1");
                c.commit().unwrap();
            });
            add(&mut w, "b");
            let mut c = w.prepare_commit().unwrap();
            c.set_payload("soft-2");
            c.commit().unwrap();
            reader.reload().unwrap();
            assert_eq!(reader.searcher().num_docs(), 2, "a soft commit is visible");
            assert_eq!(
                index.load_metas().unwrap().payload.as_deref(),
                Some("soft-2")
            );
            // the process "crashes" here: nothing else is written
            std::mem::forget(w);
        }
        let index = Index::open(SoftDirectory::open(&dir).unwrap()).unwrap();
        assert_eq!(
            index.load_metas().unwrap().payload.as_deref(),
            Some("durable-1")
        );
        assert_eq!(index.reader().unwrap().searcher().num_docs(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
