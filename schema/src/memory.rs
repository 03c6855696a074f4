//! Agent memories.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::validate::{self, FieldError, MAX_LONG, MAX_SHORT};

/// The dimension of every embedding (all-MiniLM-L6-v2).
pub const EMBEDDING_DIM: usize = 384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemoryKind {
    Fact,
    Preference,
    Episode,
    Summary,
}

impl MemoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fact => "fact",
            Self::Preference => "preference",
            Self::Episode => "episode",
            Self::Summary => "summary",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fact" => Some(Self::Fact),
            "preference" => Some(Self::Preference),
            "episode" => Some(Self::Episode),
            "summary" => Some(Self::Summary),
            _ => None,
        }
    }
}

/// A memory as a client sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryFields {
    #[schema(min_length = 1, max_length = 512)]
    pub agent_id: String,
    #[serde(default)]
    pub subject_id: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    pub kind: MemoryKind,
    #[schema(min_length = 1, max_length = 65536)]
    pub content: String,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub importance: Option<f32>,
    /// 384 finite numbers, not all zero; without it the model embeds `content`.
    #[serde(default)]
    #[schema(min_items = 384, max_items = 384)]
    pub embedding: Option<Vec<f32>>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A memory that passed every rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidMemory {
    pub agent_id: String,
    pub subject_id: Option<String>,
    pub session_id: Option<String>,
    pub kind: MemoryKind,
    pub content: String,
    pub importance: f32,
    pub embedding: Option<Vec<f32>>,
    pub metadata: serde_json::Value,
    pub expires_at: Option<DateTime<Utc>>,
}

/// An embedding must have exactly [`EMBEDDING_DIM`] finite numbers.
pub fn check_embedding(field: &str, v: &[f32]) -> Result<(), FieldError> {
    if v.len() != EMBEDDING_DIM {
        return Err(FieldError::new(
            field,
            format!("must have {EMBEDDING_DIM} numbers, got {}", v.len()),
        ));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(FieldError::new(
            format!("{field}[{i}]"),
            "must be a finite number",
        ));
    }
    Ok(())
}

impl MemoryFields {
    pub fn validate(self) -> Result<ValidMemory, FieldError> {
        use validate::text;
        let importance = self.importance.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&importance) {
            return Err(FieldError::new("importance", "must be between 0 and 1"));
        }
        if let Some(e) = &self.embedding {
            check_embedding("embedding", e)?;
        }
        Ok(ValidMemory {
            agent_id: validate::required_text("agent_id", Some(self.agent_id), MAX_SHORT)?,
            subject_id: text("subject_id", self.subject_id, MAX_SHORT)?,
            session_id: text("session_id", self.session_id, MAX_SHORT)?,
            kind: self.kind,
            content: validate::required_text("content", Some(self.content), MAX_LONG)?,
            importance,
            embedding: self.embedding,
            metadata: validate::object("metadata", self.metadata)?,
            expires_at: self.expires_at,
        })
    }
}

/// The columns of a stored memory, in the order of [`Memory`]'s fields
/// (`embedding` where `has_embedding` stands).
pub const MEMORY_COLUMNS: &[&str] = &[
    "id",
    "agent_id",
    "subject_id",
    "session_id",
    "kind",
    "content",
    "importance",
    "embedding",
    "metadata",
    "expires_at",
    "created_at",
    "updated_at",
];

/// A stored memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Memory {
    pub id: Uuid,
    pub agent_id: String,
    pub subject_id: Option<String>,
    pub session_id: Option<String>,
    pub kind: MemoryKind,
    pub content: String,
    pub importance: f32,
    pub has_embedding: bool,
    pub metadata: serde_json::Value,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_must_be_384_finite_numbers() {
        assert!(check_embedding("e", &[0.0; 384]).is_ok());
        assert!(check_embedding("e", &[0.0; 3]).is_err());
        let mut v = vec![0.0; 384];
        v[7] = f32::NAN;
        assert_eq!(check_embedding("e", &v).unwrap_err().field, "e[7]");
    }
}
