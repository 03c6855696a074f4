//! The indexer's error type: what failed, said the way an operator can act
//! on it, and whether it is an outage of something the index depends on
//! (Postgres, the disk: retry later, the API answers 503) or a fault of
//! ours (500). Internals use `anyhow` for context; everything that leaves
//! the crate is classified here.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Postgres did not answer or failed a query.
    #[error("Postgres is unreachable or failed: {0}")]
    Postgres(#[source] sqlx::Error),
    /// No space left where the index lives.
    #[error(
        "the disk holding the index is full: free space under the data directory; the indexer retries by itself"
    )]
    DiskFull(#[source] std::io::Error),
    /// Another process holds the index folder.
    #[error(
        "the index folder {0} is in use by another crmsearch process: stop that one, or give this one its own \
         CRMSEARCH_DATA"
    )]
    Locked(PathBuf),
    /// The replication slot is streaming to another backend.
    #[error(
        "the replication slot {slot} is in use by the Postgres backend {pid}: is another crmsearch running with \
         the same CRMSEARCH_NODE on this database?"
    )]
    SlotInUse { slot: String, pid: i32 },
    /// The replication slot belongs to another deployment: another
    /// database's, or another index's of this database.
    #[error(
        "the replication slot {slot} belongs to {owner}: two deployments on one Postgres need slots of their own. \
         Give this one its own CRMSEARCH_NODE, or leave it unset for a slot named after the database and the data \
         directory{lapse}"
    )]
    SlotClash {
        slot: String,
        owner: String,
        lapse: &'static str,
    },
    /// Anything else: a bug or a broken index (logged in full).
    #[error(transparent)]
    Other(anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An outage of a dependency that a retry may outlast (the API answers
    /// 503 with `Retry-After`), rather than a fault of ours.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Postgres(_)
            | Error::DiskFull(_)
            | Error::Locked(_)
            | Error::SlotInUse { .. }
            | Error::SlotClash { .. } => true,
            Error::Other(_) => false,
        }
    }
}

/// Below this much free space, a write error where the index lives is the
/// disk being full, whatever the library made of it (tantivy's indexing
/// threads report only that they died).
pub const DISK_FULL_BELOW: u64 = 4 << 20;

/// The bytes an unprivileged writer may still use on the filesystem of
/// `path`.
pub fn disk_free(path: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether `e` (or what caused it) is the disk running out of space.
pub fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28))
        {
            return true;
        }
        // tantivy sometimes keeps only the message of an io error
        if err.to_string().contains("No space left on device") {
            return true;
        }
        cur = err.source();
    }
    false
}

impl From<anyhow::Error> for Error {
    /// Classifies by the root causes: a Postgres error anywhere in the
    /// chain is an outage of Postgres, a full disk one of the disk.
    fn from(e: anyhow::Error) -> Self {
        if e.chain().any(is_disk_full) {
            let msg = format!("{e:#}");
            return Error::DiskFull(std::io::Error::new(std::io::ErrorKind::StorageFull, msg));
        }
        match e.downcast::<Error>() {
            Ok(inner) => inner,
            Err(e) => match e.downcast::<sqlx::Error>() {
                Ok(pg) => Error::Postgres(pg),
                Err(e) => Error::Other(e),
            },
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Postgres(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if is_disk_full(&e) {
            Error::DiskFull(e)
        } else {
            Error::Other(e.into())
        }
    }
}

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Self {
        if is_disk_full(&e) {
            Error::DiskFull(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                e.to_string(),
            ))
        } else {
            Error::Other(e.into())
        }
    }
}

macro_rules! from_tantivy_directory_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                tantivy::TantivyError::from(e).into()
            }
        }
    )*};
}
from_tantivy_directory_error!(
    tantivy::directory::error::OpenReadError,
    tantivy::directory::error::OpenDirectoryError
);

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Other(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_root_causes() {
        let full =
            anyhow::Error::from(std::io::Error::from_raw_os_error(28)).context("writing a segment");
        assert!(matches!(Error::from(full), Error::DiskFull(_)));
        let pg = anyhow::Error::from(sqlx::Error::PoolTimedOut).context("reading the slot");
        let pg = Error::from(pg);
        assert!(matches!(pg, Error::Postgres(_)) && pg.is_unavailable());
        let other = Error::from(anyhow::anyhow!("a bug"));
        assert!(!other.is_unavailable());
        let nested = anyhow::Error::from(Error::Locked("/x".into())).context("opening");
        assert!(matches!(Error::from(nested), Error::Locked(_)));
    }
}
