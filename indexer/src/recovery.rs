//! Recovery at open: before a writer opens a generation, its folder holds
//! exactly what the last durable commit names.
//!
//! A soft commit (see [`crate::directory`]) writes segment and delete files
//! that only the in-memory `meta.json` names. After a crash they are
//! orphans, and some of them collide with what the replay writes again:
//! tantivy names a delete file `<segment>.<opstamp>.del`, and opstamps
//! restart from the durable commit, so replaying the same deletes onto the
//! same durable segment writes the same name — and the commit fails with
//! `FileAlreadyExists` for as long as the orphan stays. Half-written files,
//! temporary files of atomic writes, a vector dump cut off halfway and lock
//! files of a dead process are orphans too.
//!
//! [`clean_to_durable`] removes all of them and rewrites tantivy's list of
//! managed files to what the durable commit names, so its garbage
//! collection agrees. It runs under the index folder's lock
//! ([`crate::store::IndexStore::open`]): no other writer can be using the
//! files it removes.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use tantivy::Index;
use tantivy::directory::MmapDirectory;

/// Files of ours that live in a generation's folder beside tantivy's.
pub const FORMAT_FILE: &str = "crmsearch-format";
/// The tenants' versions as of the durable commit ([`crate::store`]).
pub const VERSIONS_FILE: &str = "crmsearch-versions";
pub const VECTOR_DIR: &str = "vectors";
/// The previous vector dump while a new one is renamed into place.
pub const VECTOR_DIR_OLD: &str = "vectors.old";
const META: &str = "meta.json";
const MANAGED: &str = ".managed.json";

/// What [`clean_to_durable`] removed, for the log and the tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub removed: Vec<PathBuf>,
}

/// Removes from the generation folder `dir` everything the durable
/// `meta.json` does not name. Without a durable `meta.json` (the generation
/// never committed durably) every tantivy file goes. Blocking.
pub fn clean_to_durable(dir: &Path) -> crate::Result<Cleaned> {
    let mut cleaned = Cleaned::default();
    if !dir.exists() {
        return Ok(cleaned);
    }
    let living: HashSet<PathBuf> = if dir.join(META).exists() {
        let index = Index::open(MmapDirectory::open(dir)?)?;
        // (the list names a `.0.del` for segments without deletes)
        let mut files = index.load_metas()?.list_segment_files();
        files.retain(|f| dir.join(f).exists());
        files
    } else {
        HashSet::new()
    };
    // a dump cut off between its two renames: the previous one is whole
    if !dir.join(VECTOR_DIR).exists() && dir.join(VECTOR_DIR_OLD).is_dir() {
        std::fs::rename(dir.join(VECTOR_DIR_OLD), dir.join(VECTOR_DIR))?;
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = PathBuf::from(entry.file_name());
        let keep = living.contains(&name)
            || name == Path::new(META)
            || name == Path::new(FORMAT_FILE)
            || name == Path::new(VERSIONS_FILE)
            || name == Path::new(VECTOR_DIR);
        if keep {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        cleaned.removed.push(name);
    }
    if dir.join(META).exists() {
        write_managed(dir, &living)?;
    }
    if !cleaned.removed.is_empty() {
        std::fs::File::open(dir)?.sync_all()?;
        cleaned.removed.sort();
        tracing::info!(
            path = %dir.display(),
            files = cleaned.removed.len(),
            "removed index files the durable commit does not name"
        );
    }
    Ok(cleaned)
}

/// tantivy's list of the files it created (its garbage collection deletes
/// those no segment uses): exactly the durable commit's.
fn write_managed(dir: &Path, living: &HashSet<PathBuf>) -> crate::Result<()> {
    let mut sorted: Vec<&PathBuf> = living.iter().collect();
    sorted.sort();
    let mut data = serde_json::to_vec(&sorted).map_err(std::io::Error::other)?;
    data.push(b'\n');
    let tmp = dir.join(".managed.json.recovery");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(MANAGED))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Lsn;
    use crate::store::{IndexStore, Op};
    use schema::index::DocType;
    use uuid::Uuid;

    fn temp_root() -> PathBuf {
        std::env::temp_dir().join(format!("recovery-{}", Uuid::new_v4()))
    }

    fn contact(store: &IndexStore, id: Uuid, name: &str, fresh: bool) -> Op {
        let c: schema::Contact = serde_json::from_value(serde_json::json!({
            "id": id, "external_id": null, "first_name": null, "last_name": name,
            "emails": [], "phones": [], "phones_normalized": [], "title": null,
            "company_id": null, "company_name": null, "city": null, "region": null,
            "country": null, "lifecycle_stage": null, "owner_id": null, "tags": [],
            "notes": null, "custom": {}, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        Op::Upsert {
            id,
            doc: Box::new(store.schema.contact_doc(Uuid::nil(), &c)),
            fresh,
            point: None,
        }
    }

    /// What a SIGKILL leaves: the folder as it is on disk at that moment,
    /// copied while the "dead" process still holds its handles.
    fn crash_image(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                crash_image(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    fn gen_dir(root: &Path) -> PathBuf {
        crate::store::current_generation_dir(root).unwrap()
    }

    /// Durable: A, B. Soft, then the crash: A deleted (a delete file on the
    /// durable segment), C added. The replay takes both transactions into
    /// one commit, whose opstamps (restarting from the durable commit's)
    /// give the delete file the same name: it must commit, durably too.
    /// Contacts of [`durable_then_soft`] besides its three.
    const OTHERS: u64 = 8;
    /// The contacts visible after [`durable_then_soft`]: B, C and the others.
    const VISIBLE: u64 = 2 + OTHERS;

    fn durable_then_soft(root: &Path) -> (IndexStore, [Uuid; 3]) {
        let store = IndexStore::open(root).unwrap();
        let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        // others beside them: the delete below leaves the segment under the
        // share of deletes the merge policy rewrites (it would remove the
        // delete file these tests follow)
        let others =
            (0..OTHERS).map(|i| contact(&store, Uuid::new_v4(), &format!("Other{i}"), true));
        store
            .apply(
                [
                    contact(&store, ids[0], "Alpha", true),
                    contact(&store, ids[1], "Beta", true),
                ]
                .into_iter()
                .chain(others)
                .collect(),
                Lsn(10),
            )
            .unwrap();
        store.commit(Lsn(10), true).unwrap();
        // two transactions, two soft commits: the delete's commit takes the
        // opstamp after the durable one's (the stamp a commit consumes)
        store
            .apply(vec![Op::Delete { id: ids[0] }], Lsn(15))
            .unwrap();
        store.commit(Lsn(15), false).unwrap();
        store
            .apply(vec![contact(&store, ids[2], "Gamma", true)], Lsn(20))
            .unwrap();
        store.commit(Lsn(20), false).unwrap();
        (store, ids)
    }

    fn replay(store: &IndexStore, ids: &[Uuid; 3]) {
        assert_eq!(
            store.committed_lsn().unwrap(),
            Some(Lsn(10)),
            "opens at the durable commit"
        );
        store
            .apply(
                vec![
                    Op::Delete { id: ids[0] },
                    contact(store, ids[2], "Gamma", true),
                ],
                Lsn(20),
            )
            .unwrap();
        store
            .commit(Lsn(20), false)
            .expect("the replayed soft commit");
        store
            .commit(Lsn(20), true)
            .expect("the replayed durable commit");
        assert_eq!(store.count(DocType::Contact), VISIBLE);
    }

    /// Two processes that hold the same documents of a tenant, whatever
    /// their commits, give it the same version position (a cache shared
    /// between them keys by it), and so does the same process reopened at
    /// its durable commit (the versions are saved beside it); a process
    /// that cannot know (no saved versions of that commit) gives a later
    /// one, never an equal one.
    #[test]
    fn version_positions_are_shared_by_processes_showing_the_same_documents() {
        let (r1, r2) = (temp_root(), temp_root());
        let (s1, s2) = (
            IndexStore::open(&r1).unwrap(),
            IndexStore::open(&r2).unwrap(),
        );
        let tenant = Uuid::nil();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        s1.apply(vec![contact(&s1, a, "Alpha", true)], Lsn(10))
            .unwrap();
        s1.commit(Lsn(10), false).unwrap();
        s1.apply(vec![contact(&s1, b, "Beta", true)], Lsn(20))
            .unwrap();
        s1.commit(Lsn(25), false).unwrap();
        s2.apply(vec![contact(&s2, a, "Alpha", true)], Lsn(10))
            .unwrap();
        assert_eq!(
            s2.version(tenant).position(),
            0,
            "not visible before its commit"
        );
        s2.apply(vec![contact(&s2, b, "Beta", true)], Lsn(20))
            .unwrap();
        s2.commit(Lsn(30), true).unwrap();
        assert_eq!(s1.version(tenant).position(), 20);
        assert_eq!(s2.version(tenant).position(), 20);
        // a delete names no tenant: it counts for every one
        s1.apply(vec![Op::Delete { id: a }], Lsn(40)).unwrap();
        s1.commit(Lsn(40), true).unwrap();
        assert_eq!(s1.version(Uuid::new_v4()).position(), 40);
        drop((s1, s2));
        // opened again at its durable commit: the versions it held then (a
        // restarted process keys its tenants as the one before it did)
        let s2 = IndexStore::open(&r2).unwrap();
        assert_eq!(s2.version(tenant).position(), 20);
        assert_eq!(s2.version(Uuid::new_v4()).position(), 0);
        drop(s2);
        // without them (or with ones of another commit): what came before
        // the durable commit is unknown
        let saved = r2.join("gen-1").join(VERSIONS_FILE);
        let text = std::fs::read_to_string(&saved).unwrap();
        std::fs::write(&saved, text.replacen("lsn 30", "lsn 29", 1)).unwrap();
        let s2 = IndexStore::open(&r2).unwrap();
        assert_eq!(s2.version(tenant).position(), 30);
        drop(s2);
        std::fs::remove_file(&saved).unwrap();
        let s2 = IndexStore::open(&r2).unwrap();
        assert_eq!(s2.version(tenant).position(), 30);
        drop(s2);
        for d in [r1, r2] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn the_replay_after_a_crash_rewrites_the_same_delete_file() {
        let (root, image) = (temp_root(), temp_root());
        let (live, ids) = durable_then_soft(&root);
        crash_image(&root, &image);
        let dels = |dir: &Path| {
            std::fs::read_dir(dir)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some("del".as_ref()))
                .count()
        };
        assert_eq!(
            dels(&gen_dir(&image)),
            1,
            "the soft commit left a delete file"
        );
        drop(live);
        let store = IndexStore::open(&image).unwrap();
        assert_eq!(dels(&gen_dir(&image)), 0, "the orphan delete file is gone");
        replay(&store, &ids);
        drop(store);
        let store = IndexStore::open(&image).unwrap();
        assert_eq!(store.committed_lsn().unwrap(), Some(Lsn(20)));
        assert_eq!(store.count(DocType::Contact), VISIBLE);
        for d in [root, image] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn every_kind_of_orphan_is_removed_and_what_the_commit_names_stays() {
        let (root, image) = (temp_root(), temp_root());
        let (live, ids) = durable_then_soft(&root);
        crash_image(&root, &image);
        drop(live);
        let dir = gen_dir(&image);
        let orphans = [
            // half-written segment files of a commit that never finished
            "0123456789abcdef0123456789abcdef.idx",
            "0123456789abcdef0123456789abcdef.store.temp",
            // a delete file no commit names
            "fedcba9876543210fedcba9876543210.7.del",
            // temporary files of atomic writes
            ".managed.json.tmp",
            "meta.json.tmp",
            // locks of the dead process
            ".tantivy-writer.lock",
            ".tantivy-meta.lock",
        ];
        for o in orphans {
            std::fs::write(dir.join(o), b"half").unwrap();
        }
        // a vector dump cut off halfway
        std::fs::create_dir_all(dir.join("vectors.tmp")).unwrap();
        std::fs::write(dir.join("vectors.tmp/x.points"), b"half").unwrap();
        std::fs::write(image.join("CURRENT.tmp"), b"gen-9\n").unwrap();

        let durable: HashSet<PathBuf> = {
            let index = Index::open(MmapDirectory::open(&dir).unwrap()).unwrap();
            let mut files = index.load_metas().unwrap().list_segment_files();
            files.retain(|f| dir.join(f).exists());
            files
        };
        let cleaned = clean_to_durable(&dir).unwrap();
        for o in orphans.iter().chain(&["vectors.tmp"]) {
            assert!(
                cleaned.removed.contains(&PathBuf::from(o)),
                "{o} removed: {cleaned:?}"
            );
            assert!(!dir.join(o).exists(), "{o}");
        }
        let left: HashSet<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| PathBuf::from(e.unwrap().file_name()))
            .collect();
        let mut want = durable.clone();
        want.extend([META, MANAGED, FORMAT_FILE, VERSIONS_FILE].map(PathBuf::from));
        assert_eq!(left, want, "exactly what the durable commit names");
        let managed: HashSet<PathBuf> =
            serde_json::from_slice(&std::fs::read(dir.join(MANAGED)).unwrap()).unwrap();
        assert_eq!(managed, durable, "tantivy's managed list agrees");

        let store = IndexStore::open(&image).unwrap();
        assert!(!image.join("CURRENT.tmp").exists());
        replay(&store, &ids);
        for d in [root, image] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn a_vector_dump_cut_between_its_renames_comes_back() {
        let dir = temp_root();
        std::fs::create_dir_all(dir.join(VECTOR_DIR_OLD)).unwrap();
        std::fs::write(dir.join(VECTOR_DIR_OLD).join("LSN"), "0/10").unwrap();
        clean_to_durable(&dir).unwrap();
        assert!(dir.join(VECTOR_DIR).join("LSN").exists());
        assert!(!dir.join(VECTOR_DIR_OLD).exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_second_process_on_the_same_folder_is_refused() {
        let root = temp_root();
        let first = IndexStore::open(&root).unwrap();
        match IndexStore::open(&root) {
            Err(crate::Error::Locked(p)) => assert_eq!(p, root),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened twice"),
        }
        drop(first);
        IndexStore::open(&root).expect("free again");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_restart_in_process_reopens_from_the_durable_commit_and_serves_meanwhile() {
        let root = temp_root();
        let (store, ids) = durable_then_soft(&root);
        assert_eq!(store.count(DocType::Contact), VISIBLE, "B and C visible");
        let durable = store.recover().unwrap();
        assert_eq!(durable, Some(Lsn(10)));
        assert_eq!(store.catching_up_to(), Some(Lsn(20)));
        // searches still see what they saw, not the older durable state
        assert_eq!(store.count(DocType::Contact), VISIBLE);
        // nothing may claim the serving position before the replay has it
        assert!(store.commit_visible(Lsn(20)).is_err());
        assert!(
            store.begin_shadow().is_err(),
            "a reindex waits for the catch-up"
        );
        store
            .apply(
                vec![
                    Op::Delete { id: ids[0] },
                    contact(&store, ids[2], "Gamma", true),
                ],
                Lsn(20),
            )
            .unwrap();
        store.commit(Lsn(20), false).unwrap();
        assert_eq!(
            store.catching_up_to(),
            None,
            "caught up: the reopened generation serves"
        );
        assert_eq!(store.count(DocType::Contact), VISIBLE);
        store.commit(Lsn(20), true).unwrap();
        drop(store);
        let store = IndexStore::open(&root).unwrap();
        assert_eq!(store.committed_lsn().unwrap(), Some(Lsn(20)));
        let _ = std::fs::remove_dir_all(root);
    }
}
