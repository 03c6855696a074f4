//! The tantivy schema and the mapping from records to documents.
//!
//! One index holds every tenant's contacts and companies; every document
//! carries its `tenant_id` and `doc_type`, and every query must match both.
//! A stored `_source` holds the record as JSON so a hit needs no Postgres
//! round trip.

use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, INDEXED, IndexRecordOption, STORED, STRING,
    Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{DateTime, TantivyDocument};
use uuid::Uuid;

use crate::analysis::{self, FOLD_TOKENIZER, SORT_TOKENIZER};
use crate::{Company, Contact, Memory};

/// The kinds of document in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocType {
    Contact,
    Company,
    Memory,
}

impl DocType {
    pub fn as_str(self) -> &'static str {
        match self {
            DocType::Contact => "contact",
            DocType::Company => "company",
            DocType::Memory => "memory",
        }
    }
}

/// Field handles, resolved once.
///
/// - searchable text (tokenizer [`FOLD_TOKENIZER`]): `first_name`,
///   `last_name`, `name` (a company's), `title`, `company_name`, `city`,
///   `notes`, `tags`;
/// - `emails`, `phones`: pre-analysed tokens ([`analysis::email_tokens`],
///   [`analysis::phone_tokens`]), one term each; `email_locals`: each
///   address's local part alone (where a typo is looked for: the domains
///   and pieces in `emails` are shared by too many contacts);
/// - facets and filters (raw values, fast): `lifecycle_stage`, `owner_id`,
///   `company_id`, `country`, `industry`, `f_city`, `f_company`, `f_tags`;
/// - sort keys (folded, fast only): `s_first`, `s_last`, `s_company`, `s_name`;
/// - `id_key`: the id's first 8 bytes, the tie-breaker of every order.
#[derive(Debug, Clone)]
pub struct Fields {
    pub id: Field,
    pub id_key: Field,
    pub doc_type: Field,
    pub tenant_id: Field,
    pub source: Field,
    pub first_name: Field,
    pub last_name: Field,
    pub name: Field,
    pub emails: Field,
    pub email_locals: Field,
    pub phones: Field,
    pub title: Field,
    pub company_name: Field,
    pub city: Field,
    pub notes: Field,
    pub tags: Field,
    pub country: Field,
    pub lifecycle_stage: Field,
    pub owner_id: Field,
    pub company_id: Field,
    pub industry: Field,
    pub f_city: Field,
    pub f_company: Field,
    pub f_tags: Field,
    pub s_first: Field,
    pub s_last: Field,
    pub s_company: Field,
    pub s_name: Field,
    pub created_at: Field,
    pub updated_at: Field,
    /// Memories: `content` (BM25: freqs and norms), the scope (`agent_id`,
    /// `subject_id`, `session_id`, `kind`: raw, fast), `importance`,
    /// `expires_at`, and `lsn`, the commit position of the row version.
    pub content: Field,
    pub agent_id: Field,
    pub subject_id: Field,
    pub session_id: Field,
    pub kind: Field,
    pub importance: Field,
    pub expires_at: Field,
    pub lsn: Field,
}

/// Facets (API name, index field) of contacts.
pub const CONTACT_FACETS: &[(&str, &str)] = &[
    ("lifecycle_stage", "lifecycle_stage"),
    ("owner_id", "owner_id"),
    ("tags", "f_tags"),
    ("city", "f_city"),
    ("country", "country"),
    ("company_name", "f_company"),
    ("company_id", "company_id"),
];
/// Facets (API name, index field) of companies.
pub const COMPANY_FACETS: &[(&str, &str)] = &[
    ("industry", "industry"),
    ("city", "f_city"),
    ("country", "country"),
    ("tags", "f_tags"),
];
/// Sortable fields (API name, index field) of contacts; dates are the
/// `created_at` / `updated_at` fields themselves.
pub const CONTACT_SORTS: &[(&str, &str)] = &[
    ("last_name", "s_last"),
    ("first_name", "s_first"),
    ("company_name", "s_company"),
    ("created_at", "created_at"),
    ("updated_at", "updated_at"),
];
pub const COMPANY_SORTS: &[(&str, &str)] = &[
    ("name", "s_name"),
    ("created_at", "created_at"),
    ("updated_at", "updated_at"),
];
/// Date fields that take range filters.
pub const DATE_FIELDS: &[&str] = &["created_at", "updated_at"];

/// The tie-breaker of an id: its first 8 bytes, big-endian.
pub fn id_key(id: Uuid) -> u64 {
    let b = id.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

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
        // scores are computed from the kind of match, so no freqs/positions
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(FOLD_TOKENIZER)
                .set_fieldnorms(false)
                .set_index_option(IndexRecordOption::Basic),
        );
        let sort = TextOptions::default().set_fast(SORT_TOKENIZER);
        let raw = STRING | FAST;
        let date = DateOptions::from(INDEXED | FAST).set_precision(DateTimePrecision::Microseconds);
        let mut t = |name: &str, opts: TextOptions| b.add_text_field(name, opts);
        let id = t("id", STRING | STORED | FAST);
        let doc_type = t("doc_type", STRING);
        let tenant_id = t("tenant_id", STRING | FAST);
        let source = t("_source", STORED.into());
        let first_name = t("first_name", text.clone());
        let last_name = t("last_name", text.clone());
        let name = t("name", text.clone());
        let emails = t("emails", STRING);
        let phones = t("phones", STRING);
        let title = t("title", text.clone());
        let company_name = t("company_name", text.clone());
        let city = t("city", text.clone());
        let notes = t("notes", text.clone());
        let tags = t("tags", text);
        let country = t("country", raw.clone());
        let lifecycle_stage = t("lifecycle_stage", raw.clone());
        let owner_id = t("owner_id", raw.clone());
        let company_id = t("company_id", raw.clone());
        let industry = t("industry", raw.clone());
        let f_city = t("f_city", raw.clone());
        let f_company = t("f_company", raw.clone());
        let f_tags = t("f_tags", raw);
        let s_first = t("s_first", sort.clone());
        let s_last = t("s_last", sort.clone());
        let s_company = t("s_company", sort.clone());
        let s_name = t("s_name", sort);
        let id_key = b.add_u64_field("id_key", FAST);
        let created_at = b.add_date_field("created_at", date.clone());
        let updated_at = b.add_date_field("updated_at", date.clone());
        let content = b.add_text_field(
            "content",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(FOLD_TOKENIZER)
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        );
        let raw = STRING | FAST;
        let agent_id = b.add_text_field("agent_id", raw.clone());
        let subject_id = b.add_text_field("subject_id", raw.clone());
        let session_id = b.add_text_field("session_id", raw.clone());
        let kind = b.add_text_field("kind", raw);
        let importance = b.add_f64_field("importance", FAST);
        let expires_at = b.add_date_field("expires_at", date);
        let lsn = b.add_u64_field("lsn", FAST);
        let email_locals = b.add_text_field("email_locals", STRING);
        let fields = Fields {
            id,
            id_key,
            doc_type,
            tenant_id,
            source,
            first_name,
            last_name,
            name,
            emails,
            email_locals,
            phones,
            title,
            company_name,
            city,
            notes,
            tags,
            country,
            lifecycle_stage,
            owner_id,
            company_id,
            industry,
            f_city,
            f_company,
            f_tags,
            s_first,
            s_last,
            s_company,
            s_name,
            created_at,
            updated_at,
            content,
            agent_id,
            subject_id,
            session_id,
            kind,
            importance,
            expires_at,
            lsn,
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
        doc.add_u64(f.id_key, id_key(id));
        doc.add_text(f.doc_type, doc_type.as_str());
        doc.add_text(f.tenant_id, tenant.to_string());
        doc.add_text(f.source, serde_json::to_string(record).unwrap_or_default());
        for t in tags {
            doc.add_text(f.tags, t);
            doc.add_text(f.f_tags, t);
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
        for (fields, v) in [
            (&[f.first_name, f.s_first][..], &c.first_name),
            (&[f.last_name, f.s_last], &c.last_name),
            (&[f.title], &c.title),
            (&[f.company_name, f.f_company, f.s_company], &c.company_name),
            (&[f.city, f.f_city], &c.city),
            (&[f.country], &c.country),
            (&[f.notes], &c.notes),
            (&[f.lifecycle_stage], &c.lifecycle_stage),
            (&[f.owner_id], &c.owner_id),
        ] {
            if let Some(v) = v {
                for field in fields {
                    doc.add_text(*field, v);
                }
            }
        }
        if let Some(company) = c.company_id {
            doc.add_text(f.company_id, company.to_string());
        }
        add_emails(&mut doc, f.emails, c.emails.iter().map(String::as_str));
        for local in analysis::email_locals(c.emails.iter().map(String::as_str)) {
            doc.add_text(f.email_locals, local);
        }
        let mut phone_tokens: Vec<String> = Vec::new();
        for (i, raw) in c.phones.iter().enumerate() {
            let normalized = c.phones_normalized.get(i).map_or("", String::as_str);
            phone_tokens.extend(analysis::phone_tokens(raw, normalized));
        }
        phone_tokens.sort_unstable();
        phone_tokens.dedup();
        for t in phone_tokens {
            doc.add_text(f.phones, t);
        }
        doc
    }

    pub fn company_doc(&self, tenant: Uuid, c: &Company) -> TantivyDocument {
        let f = &self.fields;
        let times = [c.created_at, c.updated_at];
        let mut doc = self.base(DocType::Company, c.id, tenant, c, &c.tags, times);
        doc.add_text(f.name, &c.name);
        doc.add_text(f.s_name, &c.name);
        for (fields, v) in [
            (&[f.city, f.f_city][..], &c.city),
            (&[f.country], &c.country),
            (&[f.industry], &c.industry),
            (&[f.notes], &c.notes),
        ] {
            if let Some(v) = v {
                for field in fields {
                    doc.add_text(*field, v);
                }
            }
        }
        if let Some(domain) = &c.domain {
            add_emails(&mut doc, f.emails, std::iter::once(domain.as_str()));
        }
        doc
    }
}

impl IndexSchema {
    /// A memory's document; `lsn`: the commit position of this version.
    pub fn memory_doc(&self, tenant: Uuid, m: &Memory, lsn: u64) -> TantivyDocument {
        let f = &self.fields;
        let times = [m.created_at, m.updated_at];
        let mut doc = self.base(DocType::Memory, m.id, tenant, m, &[], times);
        doc.add_text(f.content, &m.content);
        doc.add_text(f.agent_id, &m.agent_id);
        for (field, v) in [(f.subject_id, &m.subject_id), (f.session_id, &m.session_id)] {
            if let Some(v) = v {
                doc.add_text(field, v);
            }
        }
        doc.add_text(f.kind, m.kind.as_str());
        doc.add_f64(f.importance, f64::from(m.importance));
        if let Some(t) = m.expires_at {
            doc.add_date(
                f.expires_at,
                DateTime::from_timestamp_micros(t.timestamp_micros()),
            );
        }
        doc.add_u64(f.lsn, lsn);
        doc
    }
}

/// The tokens of addresses (or bare domains), each once.
fn add_emails<'a>(doc: &mut TantivyDocument, field: Field, emails: impl Iterator<Item = &'a str>) {
    let mut tokens: Vec<String> = emails.flat_map(analysis::email_tokens).collect();
    tokens.sort_unstable();
    tokens.dedup();
    for t in tokens {
        doc.add_text(field, t);
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
        crate::analysis::register(&index);
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
        assert_eq!(count(s.fields.last_name, "muller"), 1);
        assert_eq!(count(s.fields.last_name, "mueller"), 1);
        assert_eq!(count(s.fields.phones, "49301234567"), 1);
        assert_eq!(count(s.fields.phones, "4567"), 1);
        assert_eq!(count(s.fields.emails, "example.de"), 1);
        assert_eq!(count(s.fields.tenant_id, &tenant.to_string()), 1);
        assert_eq!(count(s.fields.id, &c.id.to_string()), 1);
    }
}
