//! The CDC consumer and the index writer: logical replication (pgoutput)
//! into tantivy, with the applied LSN committed inside the index.

pub mod directory;
pub mod error;
pub mod failpoint;
pub mod lsn;
pub mod merging;
pub mod pgoutput;
pub mod pipeline;
pub mod recovery;
pub mod rows;
pub mod store;
pub mod vectors;
pub mod verify;
pub mod wal;

pub use error::{Error, Result};
pub use lsn::Lsn;
pub use merging::COMPACT_IDLE;
pub use pipeline::{Indexer, IndexerConfig, Status};
pub use store::IndexStore;
