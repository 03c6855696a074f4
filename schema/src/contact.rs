//! Contacts: what a client sends, what is stored, what is returned.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::validate::{self, FieldError, MAX_LONG, MAX_SHORT};

/// The writable fields of a contact, as a client sends them (create, bulk
/// line, or the merged document of a PATCH). Unknown fields are refused.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactFields {
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub emails: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub phones: Vec<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub company_id: Option<Uuid>,
    /// Alternative to `company_id`: the company's `external_id` in this tenant.
    #[serde(default, skip_serializing)]
    pub company_external_id: Option<String>,
    /// Alternative to `company_id`: the company's name in this tenant (case
    /// and surrounding spaces aside), created when the tenant has none by
    /// that name — what CRM exports carry.
    #[serde(default, skip_serializing)]
    pub company_name: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub lifecycle_stage: Option<String>,
    #[serde(default)]
    pub owner_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub custom: Option<serde_json::Value>,
}

/// `null` for a list means the empty list.
pub(crate) fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A contact that passed every rule, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidContact {
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub phones_normalized: Vec<String>,
    pub title: Option<String>,
    pub company_id: Option<Uuid>,
    pub company_external_id: Option<String>,
    pub company_name: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub country: Option<String>,
    pub lifecycle_stage: Option<String>,
    pub owner_id: Option<String>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub custom: serde_json::Value,
}

impl ContactFields {
    /// Applies every rule; the first broken one is returned with its field.
    pub fn validate(self) -> Result<ValidContact, FieldError> {
        use validate::text;
        let country = text("country", self.country, MAX_SHORT)?;
        let (phones, phones_normalized) = validate::phones(self.phones, country.as_deref())?;
        let contact = ValidContact {
            external_id: text("external_id", self.external_id, MAX_SHORT)?,
            first_name: text("first_name", self.first_name, MAX_SHORT)?,
            last_name: text("last_name", self.last_name, MAX_SHORT)?,
            emails: validate::emails(self.emails)?,
            phones,
            phones_normalized,
            title: text("title", self.title, MAX_SHORT)?,
            company_id: self.company_id,
            company_external_id: text("company_external_id", self.company_external_id, MAX_SHORT)?,
            company_name: text("company_name", self.company_name, MAX_SHORT)?,
            city: text("city", self.city, MAX_SHORT)?,
            region: text("region", self.region, MAX_SHORT)?,
            country,
            lifecycle_stage: text("lifecycle_stage", self.lifecycle_stage, MAX_SHORT)?,
            owner_id: text("owner_id", self.owner_id, MAX_SHORT)?,
            tags: validate::text_list("tags", self.tags)?,
            notes: text("notes", self.notes, MAX_LONG)?,
            custom: validate::object("custom", self.custom)?,
        };
        let company_refs = [
            contact.company_id.is_some(),
            contact.company_external_id.is_some(),
            contact.company_name.is_some(),
        ];
        if company_refs.iter().filter(|given| **given).count() > 1 {
            return Err(FieldError::new(
                if contact.company_external_id.is_some() {
                    "company_external_id"
                } else {
                    "company_name"
                },
                "names the company a second time; send one of `company_id`, `company_external_id` or `company_name`",
            ));
        }
        if contact.first_name.is_none()
            && contact.last_name.is_none()
            && contact.emails.is_empty()
            && contact.phones.is_empty()
        {
            return Err(FieldError::new(
                "first_name",
                "a contact needs at least one of first_name, last_name, emails or phones",
            ));
        }
        Ok(contact)
    }
}

/// The columns of a stored contact, in the order of [`Contact`]'s fields.
pub const CONTACT_COLUMNS: &[&str] = &[
    "id",
    "external_id",
    "first_name",
    "last_name",
    "emails",
    "phones",
    "phones_normalized",
    "title",
    "company_id",
    "company_name",
    "city",
    "region",
    "country",
    "lifecycle_stage",
    "owner_id",
    "tags",
    "notes",
    "custom",
    "created_at",
    "updated_at",
];

/// A stored contact, as every read returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contact {
    pub id: Uuid,
    pub external_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub phones_normalized: Vec<String>,
    pub title: Option<String>,
    pub company_id: Option<Uuid>,
    pub company_name: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub country: Option<String>,
    pub lifecycle_stage: Option<String>,
    pub owner_id: Option<String>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub custom: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Contact {
    /// The writable fields of a stored contact: the base a PATCH merges into.
    pub fn fields(&self) -> ContactFields {
        ContactFields {
            external_id: self.external_id.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            emails: self.emails.clone(),
            phones: self.phones.clone(),
            title: self.title.clone(),
            company_id: self.company_id,
            company_external_id: None,
            company_name: None,
            city: self.city.clone(),
            region: self.region.clone(),
            country: self.country.clone(),
            lifecycle_stage: self.lifecycle_stage.clone(),
            owner_id: self.owner_id.clone(),
            tags: self.tags.clone(),
            notes: self.notes.clone(),
            custom: Some(self.custom.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_named() {
        let err = serde_json::from_str::<ContactFields>(r#"{"first_nam": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("first_nam"), "{err}");
    }

    #[test]
    fn a_contact_needs_something_to_find_it_by() {
        assert!(ContactFields::default().validate().is_err());
        let ok = ContactFields {
            last_name: Some(" Müller ".into()),
            ..Default::default()
        };
        assert_eq!(ok.validate().unwrap().last_name.as_deref(), Some("Müller"));
    }

    #[test]
    fn null_lists_are_empty() {
        let f: ContactFields = serde_json::from_str(r#"{"last_name":"x","tags":null}"#).unwrap();
        assert!(f.tags.is_empty());
    }
}
