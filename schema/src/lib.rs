//! The contract crate: the domain types every other crate speaks, and the
//! validation and normalisation rules that hold wherever a row is written.
//! No IO lives here.

pub mod analysis;
pub mod company;
pub mod contact;
pub mod index;
pub mod memory;
pub mod nicknames;
pub mod pgtext;
pub mod validate;

pub use company::{Company, CompanyFields};
pub use contact::{Contact, ContactFields};
pub use memory::{EMBEDDING_DIM, Memory, MemoryFields, MemoryKind};
pub use validate::FieldError;

/// Bumped whenever the index layout or an analyzer changes; an index written
/// with another version is rebuilt.
pub const INDEX_FORMAT_VERSION: u32 = 5;
