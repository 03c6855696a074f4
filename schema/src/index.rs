//! The tantivy schema and the mapping from records to documents.
//!
//! One index holds every tenant's contacts and companies; every document
//! carries its `tenant_id` and `doc_type`, and every query must match both.
//! A stored `_source` holds the record as JSON so a hit needs no Postgres
//! round trip.

use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{DateTime, TantivyDocument};
use uuid::Uuid;

use crate::{Company, Contact};

/// The kinds of document in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocType {
    Contact,
    Company,
}

impl DocType {
    pub fn as_str(self) -> &'static str {
        match self {
            DocType::Contact => "contact",
            DocType::Company => "company",
        }
    }
}

/// Field handles, resolved once.
#[derive(Debug, Clone)]
pub struct Fields {
    pub id: Field,
    pub doc_type: Field,
    pub tenant_id: Field,
    pub source: Field,
    pub first_name: Field,
    pub last_name: Field,
    pub name: Field,
    pub emails: Field,
    pub phones: Field,
    pub title: Field,
    pub company_name: Field,
    pub city: Field,
    pub country: Field,
    pub notes: Field,
    pub tags: Field,
    pub lifecycle_stage: Field,
    pub owner_id: Field,
    pub company_id: Field,
    pub created_at: Field,
    pub updated_at: Field,
}

/// The text fields a query looks in, best first.
pub const CONTACT_TEXT_FIELDS: &[&str] = &[
    "first_name",
    "last_name",
    "emails",
    "phones",
    "company_name",
    "title",
    "city",
    "country",
    "notes",
    "tags",
];
pub const COMPANY_TEXT_FIELDS: &[&str] = &["name", "emails", "city", "country", "notes", "tags"];

#[derive(Debug, Clone)]
pub struct IndexSchema {
    pub schema: Schema,
    pub fields: Fields,
}

impl Default for IndexSchema {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexSchema {
    pub fn new() -> Self {
        let mut b = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let raw = STRING | FAST;
        // fast: the tie-breaker that makes every sort a total order
        let id = b.add_text_field("id", STRING | STORED | FAST);
        let doc_type = b.add_text_field("doc_type", STRING);
        let tenant_id = b.add_text_field("tenant_id", STRING | FAST);
        let source = b.add_text_field("_source", STORED);
        let first_name = b.add_text_field("first_name", text.clone());
        let last_name = b.add_text_field("last_name", text.clone());
        let name = b.add_text_field("name", text.clone());
        let emails = b.add_text_field("emails", text.clone());
        let phones = b.add_text_field("phones", text.clone());
        let title = b.add_text_field("title", text.clone());
        let company_name = b.add_text_field("company_name", text.clone());
        let city = b.add_text_field("city", text.clone());
        let country = b.add_text_field("country", text.clone());
        let notes = b.add_text_field("notes", text.clone());
        let tags = b.add_text_field("tags", text);
        let lifecycle_stage = b.add_text_field("lifecycle_stage", raw.clone());
        let owner_id = b.add_text_field("owner_id", raw.clone());
        let company_id = b.add_text_field("company_id", raw);
        let created_at = b.add_date_field("created_at", INDEXED | FAST);
        let updated_at = b.add_date_field("updated_at", INDEXED | FAST);
        let fields = Fields {
            id,
            doc_type,
            tenant_id,
            source,
            first_name,
            last_name,
            name,
            emails,
            phones,
            title,
            company_name,
            city,
            country,
            notes,
            tags,
            lifecycle_stage,
            owner_id,
            company_id,
            created_at,
            updated_at,
        };
        Self {
            schema: b.build(),
            fields,
        }
    }

    /// What every document carries: identity, tenant, source, tags, times.
    fn base<R: serde::Serialize>(
        &self,
        doc_type: DocType,
        id: Uuid,
        tenant: Uuid,
        record: &R,
        tags: &[String],
        times: [chrono::DateTime<chrono::Utc>; 2],
    ) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, id.to_string());
        doc.add_text(f.doc_type, doc_type.as_str());
        doc.add_text(f.tenant_id, tenant.to_string());
        doc.add_text(f.source, serde_json::to_string(record).unwrap_or_default());
        for t in tags {
            doc.add_text(f.tags, t);
        }
        for (field, t) in [f.created_at, f.updated_at].into_iter().zip(times) {
            doc.add_date(field, DateTime::from_timestamp_micros(t.timestamp_micros()));
        }
        doc
    }

    pub fn contact_doc(&self, tenant: Uuid, c: &Contact) -> TantivyDocument {
        let f = &self.fields;
        let times = [c.created_at, c.updated_at];
        let mut doc = self.base(DocType::Contact, c.id, tenant, c, &c.tags, times);
        let mut opt = |field: Field, v: &Option<String>| {
            if let Some(v) = v {
                doc.add_text(field, v);
            }
        };
        opt(f.first_name, &c.first_name);
        opt(f.last_name, &c.last_name);
        opt(f.title, &c.title);
        opt(f.company_name, &c.company_name);
        opt(f.city, &c.city);
        opt(f.country, &c.country);
        opt(f.notes, &c.notes);
        opt(f.lifecycle_stage, &c.lifecycle_stage);
        opt(f.owner_id, &c.owner_id);
        if let Some(company) = c.company_id {
            doc.add_text(f.company_id, company.to_string());
        }
        for e in &c.emails {
            doc.add_text(f.emails, e);
        }
        for p in c.phones_normalized.iter() {
            doc.add_text(f.phones, p.trim_start_matches('+'));
        }
        doc
    }

    pub fn company_doc(&self, tenant: Uuid, c: &Company) -> TantivyDocument {
        let f = &self.fields;
        let times = [c.created_at, c.updated_at];
        let mut doc = self.base(DocType::Company, c.id, tenant, c, &c.tags, times);
        doc.add_text(f.name, &c.name);
        for (field, v) in [
            (f.emails, &c.domain),
            (f.city, &c.city),
            (f.country, &c.country),
            (f.notes, &c.notes),
        ] {
            if let Some(v) = v {
                doc.add_text(field, v);
            }
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::collector::Count;
    use tantivy::query::TermQuery;
    use tantivy::schema::IndexRecordOption;
    use tantivy::{Index, Term};

    #[test]
    fn a_contact_is_found_by_its_words_and_tenant() {
        let s = IndexSchema::new();
        let index = Index::create_in_ram(s.schema.clone());
        let mut w = index.writer_with_num_threads(1, 15_000_000).unwrap();
        let c = Contact {
            id: Uuid::new_v4(),
            external_id: None,
            first_name: Some("Jürgen".into()),
            last_name: Some("Müller".into()),
            emails: vec!["jm@example.de".into()],
            phones: vec!["030 1234567".into()],
            phones_normalized: vec!["+49301234567".into()],
            title: None,
            company_id: None,
            company_name: Some("Acme".into()),
            city: None,
            region: None,
            country: None,
            lifecycle_stage: Some("lead".into()),
            owner_id: None,
            tags: vec![],
            notes: None,
            custom: serde_json::json!({}),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let tenant = Uuid::new_v4();
        w.add_document(s.contact_doc(tenant, &c)).unwrap();
        w.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let count = |field, text: &str| {
            let q = TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::Basic);
            searcher.search(&q, &Count).unwrap()
        };
        assert_eq!(count(s.fields.last_name, "müller"), 1);
        assert_eq!(count(s.fields.phones, "49301234567"), 1);
        assert_eq!(count(s.fields.tenant_id, &tenant.to_string()), 1);
        assert_eq!(count(s.fields.id, &c.id.to_string()), 1);
    }
}
