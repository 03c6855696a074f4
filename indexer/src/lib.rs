//! The CDC consumer and the index writer. For now: the replication
//! positions (`Lsn`) that the write API hands out and searches wait for.

pub mod lsn;

pub use lsn::Lsn;
