//! From the text a person typed to a tantivy query.
//!
//! `q` is cut to [`MAX_QUERY_CHARS`] characters and [`MAX_QUERY_WORDS`]
//! words; quotes and control characters separate words. Each word is one of:
//! - digits (a run of chunks made only of digits and `+ ( ) - . /`, so a
//!   phone number typed with spaces is one word): matched in the phone
//!   tokens exactly, by prefix when it is being typed, never fuzzily;
//! - an address (a chunk with `@`): matched in the email tokens;
//! - a word: folded like the index, matched exactly, by prefix (the last
//!   word while it is being typed, that is, unless `q` ends with a space),
//!   or within edits by its length — 0 under 5 letters, 1 from 5, 2 from 9.
//!
//! Every word must match some field (word order is free); a word's score is
//! the best `field weight × kind of match` over the fields it matched in
//! (plus a tenth of the others), and a document's score is the sum over
//! words.

use std::sync::Arc;

use schema::analysis;
use schema::index::{DocType, Fields};
use schema::nicknames;
use tantivy::query::{DisjunctionMaxQuery, Query};
use tantivy::schema::Field;

use super::matcher::{FieldMatch, WordMatch, kind};

/// Longest `q` considered (characters); the rest is ignored.
pub const MAX_QUERY_CHARS: usize = 256;
/// Most words of `q` considered; the rest are ignored.
pub const MAX_QUERY_WORDS: usize = 10;
/// Shortest prefix looked up in secondary fields (title, city, tags, notes),
/// where one or two letters match too much to mean anything.
const MIN_SECONDARY_PREFIX: usize = 3;
/// Shortest digits word matched as a prefix of a phone number.
const MIN_PHONE_PREFIX: usize = 3;
/// Shortest finished word that matches as a prefix of a name when nothing
/// matches it whole ("ann kowa").
pub const MIN_WORD_PREFIX: usize = 3;

/// Most terms a word expands to in one field, by prefix or by typos, beside
/// its own spelling and alternatives (the best kind of match first, then the
/// terms in most documents, over the whole index): what bounds a query's
/// cost whatever the index holds.
pub const MAX_EXPANSIONS: usize = 64;
/// The same for a word of one or two letters being typed, whose prefix
/// takes in hundreds of names: the most common of them suggest themselves
/// until a third letter narrows it.
pub const MAX_SHORT_PREFIX_EXPANSIONS: usize = 16;

/// A word of the query.
#[derive(Debug, Clone, PartialEq)]
pub enum Word {
    Text(String),
    Digits(String),
    Email(String),
}

/// The words of `q` and whether the last one is still being typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub words: Vec<Word>,
    pub typing: bool,
    /// Chunks that read as an address's local part ("anna.schmidt"): their
    /// words match as usual, and the whole chunk, typos and all, ranks the
    /// contact whose address it is first (see [`local_boosts`]).
    pub locals: Vec<String>,
    /// The query has something in it but nothing that can match: only
    /// punctuation, symbols or invisible characters, or a word longer than
    /// any the index keeps ([`analysis::MAX_TOKEN_BYTES`]). It matches no
    /// document (a blank query matches every one).
    pub unsearchable: bool,
}

impl Parsed {
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words that may match as a prefix once they are known to match
    /// nothing whole: finished words (not the one being typed) of
    /// [`MIN_WORD_PREFIX`]+ letters, not addresses or digits.
    pub fn prefix_candidates(&self) -> impl Iterator<Item = (usize, &str)> {
        self.words
            .iter()
            .enumerate()
            .filter_map(move |(i, w)| match w {
                Word::Text(t) if !self.typed_at(i) && t.chars().count() >= MIN_WORD_PREFIX => {
                    Some((i, t.as_str()))
                }
                Word::Text(_) | Word::Digits(_) | Word::Email(_) => None,
            })
    }

    /// Whether word `i` is the one still being typed (the last, with no
    /// space after it).
    fn typed_at(&self, i: usize) -> bool {
        self.typing && i + 1 == self.words.len()
    }

    /// Whether word `i` is one letter beside other words: an initial.
    fn is_initial(&self, i: usize) -> bool {
        self.words.len() > 1
            && !self.typed_at(i)
            && matches!(&self.words[i], Word::Text(t) if t.chars().count() == 1
                && t.chars().all(char::is_alphabetic))
    }
}

/// Most chunks of a query taken as local parts.
const MAX_LOCALS: usize = 2;
/// Shortest local part looked up with typos.
const MIN_LOCAL: usize = 5;

/// `chunk` as an address's local part: 5+ characters, letters and digits
/// joined by `. _ - +` (at least one of them inside), lower-cased.
fn local_part(chunk: &str) -> Option<String> {
    let local = chunk
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    let joined = local.contains(['.', '_', '-', '+']);
    let plain = local
        .chars()
        .all(|c| c.is_alphanumeric() || ".-_+".contains(c));
    (joined
        && plain
        && local.chars().count() >= MIN_LOCAL
        && local.len() <= analysis::MAX_TOKEN_BYTES)
        .then_some(local)
}

fn is_phone_chunk(chunk: &str) -> bool {
    chunk.chars().any(|c| c.is_ascii_digit())
        && chunk
            .chars()
            .all(|c| c.is_ascii_digit() || "+()-./".contains(c))
}

/// Splits `q` into words (see the module's documentation).
pub fn parse(q: &str) -> Parsed {
    let q: String = q
        .chars()
        .take(MAX_QUERY_CHARS)
        .map(|c| {
            if c.is_control() || c == '"' || c == '\u{201c}' || c == '\u{201d}' {
                ' '
            } else {
                c
            }
        })
        .collect();
    let typing = !q.ends_with(char::is_whitespace);
    let mut words: Vec<Word> = Vec::new();
    let mut locals: Vec<String> = Vec::new();
    let mut digits = String::new();
    let mut too_long = false;
    let push = |words: &mut Vec<Word>, w: Word| {
        if !words.contains(&w) {
            words.push(w);
        }
    };
    for chunk in q.split_whitespace() {
        if is_phone_chunk(chunk) {
            digits.extend(chunk.chars().filter(char::is_ascii_digit));
            continue;
        }
        if !digits.is_empty() {
            push(&mut words, Word::Digits(std::mem::take(&mut digits)));
        }
        if chunk.contains('@') {
            let email = chunk
                .trim_matches(|c: char| !c.is_alphanumeric() && c != '@')
                .to_lowercase();
            if email.len() > analysis::MAX_TOKEN_BYTES {
                too_long = true;
            } else if !email.is_empty() {
                push(&mut words, Word::Email(email));
            }
            continue;
        }
        if let Some(local) = local_part(chunk)
            && locals.len() < MAX_LOCALS
            && !locals.contains(&local)
        {
            locals.push(local);
        }
        for w in analysis::words(chunk) {
            if w.folded.len() <= analysis::MAX_TOKEN_BYTES {
                push(&mut words, Word::Text(w.folded));
            } else {
                too_long = true;
            }
        }
    }
    if !digits.is_empty() {
        push(&mut words, Word::Digits(digits));
    }
    // a chunk of punctuation alone ends no word
    let typing = typing
        && !q
            .trim_end()
            .ends_with(|c: char| !c.is_alphanumeric() && c != '@');
    words.truncate(MAX_QUERY_WORDS);
    let unsearchable = too_long || (words.is_empty() && !q.trim().is_empty());
    Parsed {
        words,
        typing,
        locals,
        unsearchable,
    }
}

/// How many typos a word may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typos {
    /// None at all (`"typo_tolerance": false`).
    Off,
    /// By length: 0 under 5 letters, 1 from 5, 2 from 9.
    Normal,
    /// One more step, for a query that found nothing: 1 from 3 letters, 2
    /// from 6 (a deletion makes "Käthe" a four-letter "Kähe").
    Relaxed,
}

/// Edits allowed for a word of `len` letters.
pub fn distance_for(len: usize) -> u8 {
    match len {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    }
}

fn distance(typos: Typos, len: usize) -> u8 {
    match (typos, len) {
        (Typos::Off, _) => 0,
        (Typos::Normal, len) => distance_for(len),
        (Typos::Relaxed, 0..=2) => 0,
        (Typos::Relaxed, 3..=5) => 1,
        (Typos::Relaxed, _) => 2,
    }
}

/// Where and how much a field counts.
#[derive(Debug, Clone, Copy)]
struct Target {
    field: Field,
    weight: f32,
    fuzzy: bool,
    /// Prefixes of any length (names, company); others from 3 letters.
    primary: bool,
    /// A person's name: takes initials.
    name: bool,
    nicknames: bool,
}

/// The fields a kind of search looks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Contacts, every searchable field.
    Contacts,
    /// Companies, every searchable field.
    Companies,
    /// Contacts' names and emails (autocomplete).
    ContactNames,
    /// Companies' names (autocomplete).
    CompanyNames,
}

impl Scope {
    pub fn doc_type(self) -> DocType {
        match self {
            Scope::Contacts | Scope::ContactNames => DocType::Contact,
            Scope::Companies | Scope::CompanyNames => DocType::Company,
        }
    }

    fn targets(self, f: &Fields) -> Vec<Target> {
        let t = |field, weight, fuzzy, primary| Target {
            field,
            weight,
            fuzzy,
            primary,
            name: false,
            nicknames: false,
        };
        let first = Target {
            nicknames: true,
            name: true,
            ..t(f.first_name, 10.0, true, true)
        };
        let last = Target {
            name: true,
            ..t(f.last_name, 10.0, true, true)
        };
        match self {
            Scope::Contacts => vec![
                first,
                last,
                t(f.emails, 7.0, false, false),
                t(f.email_locals, 7.0, true, false),
                t(f.company_name, 6.0, true, true),
                t(f.title, 4.0, false, false),
                t(f.city, 4.0, false, false),
                t(f.tags, 3.0, false, false),
                t(f.notes, 1.0, false, false),
            ],
            Scope::Companies => vec![
                t(f.name, 10.0, true, true),
                t(f.emails, 7.0, false, false),
                t(f.city, 4.0, false, false),
                t(f.tags, 3.0, false, false),
                t(f.notes, 1.0, false, false),
            ],
            Scope::ContactNames => vec![
                first,
                last,
                t(f.emails, 7.0, false, false),
                t(f.email_locals, 7.0, true, false),
            ],
            Scope::CompanyNames => vec![t(f.name, 10.0, true, true)],
        }
    }

    /// The fields a finished word matches by prefix in (when it matches
    /// nothing whole): names and company names.
    pub fn prefix_fields(self, f: &Fields) -> Vec<Field> {
        self.targets(f)
            .iter()
            .filter(|t| t.primary)
            .map(|t| t.field)
            .collect()
    }
}

/// How the words of a query match, for highlighting.
#[derive(Debug, Clone)]
pub struct Matchers {
    pub words: Vec<Arc<WordMatch>>,
    pub digits: Vec<(String, bool)>,
    /// Per word, the fields it is looked for in.
    pub fields: Vec<Vec<FieldMatch>>,
}

impl Matchers {
    /// False when some word certainly matches no term of the index: every
    /// field it is looked for in is a plain lookup (no typos) that finds
    /// nothing. A conjunction of the words then matches nothing, whatever
    /// else it holds — known without expanding the other words.
    pub fn may_match(&self, searcher: &tantivy::Searcher) -> tantivy::Result<bool> {
        for fields in &self.fields {
            let mut found = false;
            for f in fields {
                if !f.plain() || f.has_any_term(searcher)? {
                    found = true;
                    break;
                }
            }
            if !found {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// One clause per word (each must match), and what each word matches.
///
/// `word_prefix[i]`: finished word `i` matches nothing whole, so it also
/// matches as the start of a name ([`kind::WORD_PREFIX`]); see
/// [`Parsed::prefix_candidates`]. Missing entries count as `false`.
pub fn build(
    parsed: &Parsed,
    scope: Scope,
    f: &Fields,
    typos: Typos,
    word_prefix: &[bool],
) -> (Vec<Box<dyn Query>>, Matchers) {
    let targets = scope.targets(f);
    let mut clauses: Vec<Box<dyn Query>> = Vec::new();
    let mut matchers = Matchers {
        words: Vec::new(),
        digits: Vec::new(),
        fields: Vec::new(),
    };
    for (i, word) in parsed.words.iter().enumerate() {
        let typing = parsed.typed_at(i);
        let mut per_field: Vec<FieldMatch> = Vec::new();
        match word {
            Word::Text(text) | Word::Email(text) => {
                let email = matches!(word, Word::Email(_));
                let len = text.chars().count();
                let distance = distance(typos, len);
                let initial = !email && parsed.is_initial(i);
                let whole_prefix = !email && word_prefix.get(i).copied().unwrap_or(false);
                // where a prefix of it may match, and how that scores
                let (prefix_kind, prefix_in): (f32, &dyn Fn(&Target) -> bool) = if typing {
                    // an address being typed matches by prefix however short
                    (kind::PREFIX, &|t: &Target| {
                        t.primary || email || len >= MIN_SECONDARY_PREFIX
                    })
                } else if initial {
                    (kind::INITIAL, &|t: &Target| t.name)
                } else if whole_prefix {
                    (kind::WORD_PREFIX, &|t: &Target| t.primary)
                } else {
                    (kind::PREFIX, &|_: &Target| false)
                };
                let mut alternatives: Vec<(String, f32)> = Vec::new();
                if !email && let Some(alt) = analysis::german_alternative(text) {
                    alternatives.push((alt, kind::EXACT));
                }
                let word = Arc::new(WordMatch {
                    word: text.clone(),
                    alternatives,
                    prefix: typing || initial || whole_prefix,
                    prefix_kind,
                    distance,
                    max_expansions: if initial {
                        // a letter's names, narrowed by the other words
                        usize::MAX
                    } else if typing && len <= 2 {
                        MAX_SHORT_PREFIX_EXPANSIONS
                    } else {
                        MAX_EXPANSIONS
                    },
                });
                let nicknames = (!email).then(|| {
                    Arc::new(WordMatch {
                        alternatives: nicknames::related(text)
                            .iter()
                            .map(|n| ((*n).to_owned(), kind::NICKNAME))
                            .collect(),
                        ..(*word).clone()
                    })
                });
                // a word being typed is fuzzy by prefix in the fields that
                // take prefixes; in an address's local part, whole (every
                // longer address would match a fuzzy prefix)
                let automaton = word.automaton(typing);
                let whole = if typing {
                    word.automaton(false)
                } else {
                    automaton.clone()
                };
                for t in &targets {
                    if email && t.field != f.emails {
                        continue;
                    }
                    let in_locals = t.field == f.email_locals;
                    // local parts are there for their typos (the exact ones
                    // match in `emails`)
                    if in_locals && whole.is_none() {
                        continue;
                    }
                    let word = match (&nicknames, t.nicknames) {
                        (Some(n), true) => n.clone(),
                        (Some(_) | None, _) => word.clone(),
                    };
                    per_field.push(FieldMatch {
                        field: t.field,
                        weight: t.weight,
                        word,
                        // the email tokens are many: fuzzy only for a whole
                        // address
                        fuzzy: t.fuzzy || email,
                        prefix: prefix_in(t) && !in_locals,
                        pieces: !email && t.field == f.emails,
                        automaton: if in_locals {
                            whole.clone()
                        } else {
                            automaton.clone()
                        },
                    });
                }
                matchers.words.push(nicknames.unwrap_or(word));
            }
            Word::Digits(digits) => {
                let word = Arc::new(WordMatch {
                    word: digits.clone(),
                    alternatives: Vec::new(),
                    prefix: typing,
                    prefix_kind: kind::PREFIX,
                    distance: 0,
                    // numbers are one document each: a prefix of them all
                    max_expansions: usize::MAX,
                });
                per_field.push(FieldMatch {
                    field: f.phones,
                    weight: 9.0,
                    word: word.clone(),
                    fuzzy: false,
                    prefix: digits.len() >= MIN_PHONE_PREFIX,
                    pieces: false,
                    automaton: None,
                });
                // a number can also be a word of a name-like field ("event-2025")
                for t in &targets {
                    if t.field != f.emails && t.field != f.first_name && t.field != f.last_name {
                        per_field.push(FieldMatch {
                            field: t.field,
                            weight: 1.0,
                            word: word.clone(),
                            fuzzy: false,
                            prefix: false,
                            pieces: false,
                            automaton: None,
                        });
                    }
                }
                matchers.digits.push((digits.clone(), typing));
            }
        }
        let boxed: Vec<Box<dyn Query>> = per_field
            .iter()
            .map(|m| Box::new(m.clone()) as Box<dyn Query>)
            .collect();
        clauses.push(Box::new(DisjunctionMaxQuery::with_tie_breaker(boxed, 0.1)));
        matchers.fields.push(per_field);
    }
    (clauses, matchers)
}

/// Weight of a contact's address whose local part a chunk of the query
/// spells (within typos by its length): above a name's fuzzy match, so the
/// one whose address it is leads the others of the same name.
const LOCAL_WEIGHT: f32 = 8.0;

/// Optional clauses that rank up the contacts whose address has one of
/// `parsed`'s local parts (typos by length, as names take them): every
/// word must still match, these only order.
pub fn local_boosts(
    parsed: &Parsed,
    scope: Scope,
    f: &Fields,
    typos: Typos,
) -> Vec<Box<dyn Query>> {
    if scope.doc_type() != DocType::Contact {
        return Vec::new();
    }
    parsed
        .locals
        .iter()
        .map(|local| {
            let word = Arc::new(WordMatch {
                word: local.clone(),
                alternatives: Vec::new(),
                prefix: false,
                prefix_kind: kind::PREFIX,
                distance: distance(typos, local.chars().count()),
                max_expansions: MAX_EXPANSIONS,
            });
            Box::new(FieldMatch {
                field: f.email_locals,
                weight: LOCAL_WEIGHT,
                automaton: word.automaton(false),
                word,
                fuzzy: true,
                prefix: false,
                pieces: false,
            }) as Box<dyn Query>
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(q: &str) -> Vec<Word> {
        parse(q).words
    }

    #[test]
    fn parsing() {
        use Word::{Digits, Email, Text};
        assert_eq!(
            words("Jon Smi"),
            vec![Text("jon".into()), Text("smi".into())]
        );
        assert_eq!(
            words("+46 8 123 456 78"),
            vec![Digits("46812345678".into())]
        );
        assert_eq!(
            words("anna 08-123 45678"),
            vec![Text("anna".into()), Digits("0812345678".into())]
        );
        assert_eq!(
            words("Anna.S@Example.se,"),
            vec![Email("anna.s@example.se".into())]
        );
        assert_eq!(
            words("\"Müller\" \u{7} O'Brien"),
            vec![
                Text("muller".into()),
                Text("o".into()),
                Text("brien".into())
            ]
        );
        assert!(parse("jo").typing && !parse("jo ").typing && !parse("jo,").typing);
        assert_eq!(parse("Anna.Schmdit, bob").locals, ["anna.schmdit"]);
        assert!(parse("a.b anna schmidt o'brien").locals.is_empty());
        assert_eq!(words(&"a ".repeat(10_000)).len(), 1);
        // cut at MAX_QUERY_CHARS, possibly inside a word
        assert!(words(&"ab cd ef gh ".repeat(1000)).len() <= 5);
        assert!(words("🙂 \u{202e}").is_empty());
        assert!(parse("🙂 \u{200b}").unsearchable && !parse(" ").unsearchable);
        assert!(parse(&format!("anna {}", "x".repeat(65))).unsearchable);
        assert!(!parse(&format!("anna {}", "x".repeat(64))).unsearchable);
        assert_eq!(words("مرحبا"), vec![Text("مرحبا".into())]);
        let many: String = (0..100).map(|i| format!("w{i} ")).collect();
        assert_eq!(words(&many).len(), MAX_QUERY_WORDS);
    }

    #[test]
    fn distances_by_length() {
        assert_eq!([1, 4, 5, 8, 9, 20].map(distance_for), [0, 0, 1, 1, 2, 2]);
    }
}
