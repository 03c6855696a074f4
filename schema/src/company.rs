//! Companies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::contact::null_as_default;
use crate::validate::{self, FieldError, MAX_LONG, MAX_SHORT};

/// The writable fields of a company.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyFields {
    #[serde(default)]
    pub external_id: Option<String>,
    /// Required when creating.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 512)]
    pub name: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub industry: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub custom: Option<serde_json::Value>,
}

/// A company that passed every rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCompany {
    pub external_id: Option<String>,
    pub name: String,
    pub domain: Option<String>,
    pub industry: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub country: Option<String>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub custom: serde_json::Value,
}

impl CompanyFields {
    pub fn validate(self) -> Result<ValidCompany, FieldError> {
        use validate::text;
        let domain = text("domain", self.domain, MAX_SHORT)?.map(|d| d.to_lowercase());
        if let Some(d) = &domain
            && (d.contains(char::is_whitespace) || d.contains('@') || !d.contains('.'))
        {
            return Err(FieldError::new(
                "domain",
                format!("`{d}` is not a domain name like example.com"),
            ));
        }
        Ok(ValidCompany {
            external_id: text("external_id", self.external_id, MAX_SHORT)?,
            name: validate::required_text("name", self.name, MAX_SHORT)?,
            domain,
            industry: text("industry", self.industry, MAX_SHORT)?,
            city: text("city", self.city, MAX_SHORT)?,
            region: text("region", self.region, MAX_SHORT)?,
            country: text("country", self.country, MAX_SHORT)?,
            tags: validate::text_list("tags", self.tags)?,
            notes: text("notes", self.notes, MAX_LONG)?,
            custom: validate::object("custom", self.custom)?,
        })
    }
}

/// The columns of a stored company, in the order of [`Company`]'s fields.
pub const COMPANY_COLUMNS: &[&str] = &[
    "id",
    "external_id",
    "name",
    "domain",
    "industry",
    "city",
    "region",
    "country",
    "tags",
    "notes",
    "custom",
    "created_at",
    "updated_at",
];

/// A stored company.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Company {
    pub id: Uuid,
    pub external_id: Option<String>,
    pub name: String,
    pub domain: Option<String>,
    pub industry: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub country: Option<String>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub custom: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Company {
    pub fn fields(&self) -> CompanyFields {
        CompanyFields {
            external_id: self.external_id.clone(),
            name: Some(self.name.clone()),
            domain: self.domain.clone(),
            industry: self.industry.clone(),
            city: self.city.clone(),
            region: self.region.clone(),
            country: self.country.clone(),
            tags: self.tags.clone(),
            notes: self.notes.clone(),
            custom: Some(self.custom.clone()),
        }
    }
}
