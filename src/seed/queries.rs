//! A relevance query set over a list of contacts: what CRM users type
//! (misspelt names, names without their accents, phone numbers in another
//! format, addresses), each with every contact that is an equally correct
//! answer.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use schema::ContactFields;
use schema::analysis::fold;
use serde::{Deserialize, Deserializer, Serialize};

use super::{STREAM_MORE_QUERIES, STREAM_QUERIES, rng_for};

/// The kinds of query: the eight of [`SHARES`], then the four of
/// [`MORE_SHARES`].
pub const KINDS: [&str; 12] = [
    "typo1",
    "typo2",
    "accents",
    "translit",
    "reordered",
    "partial",
    "phone",
    "email",
    "initial",
    "prefixes",
    "email_typo",
    "nickname",
];

/// Percent of the `n` queries of each of the first eight kinds.
const SHARES: [u32; 8] = [30, 10, 10, 5, 10, 15, 10, 10];
/// Queries of the last four kinds, in percent of `n`, made after the others
/// from a stream of their own (so the first `n` stay what they were).
const MORE_SHARES: [u32; 4] = [10, 10, 10, 5];

const TYPO1: usize = 0;
const TYPO2: usize = 1;
const ACCENTS: usize = 2;
const TRANSLIT: usize = 3;
const REORDERED: usize = 4;
const PARTIAL: usize = 5;
const PHONE: usize = 6;
const EMAIL: usize = 7;
const INITIAL: usize = 8;
const PREFIXES: usize = 9;
const EMAIL_TYPO: usize = 10;
const NICKNAME: usize = 11;

/// A query and its ground truth.
///
/// Kinds (see [`KINDS`]):
/// - `typo1`: "first last" with one edit (keyboard-neighbour substitution,
///   deletion, insertion or adjacent transposition) in a name of 5+ letters;
///   the first letter changed in about one case in ten.
/// - `typo2`: a surname of 9+ letters alone, with two edits.
/// - `accents`: "first last" with diacritics stripped (Jorgen Muller).
/// - `translit`: "first last" with ä/ö/ü spelled ae/oe/ue (Joerg Mueller).
/// - `reordered`: "last first".
/// - `partial`: "first" and the first 3-5 letters of the surname.
/// - `phone`: one of the contact's numbers written differently (national
///   for international and back, digits only, or its last 6-8 digits).
/// - `email`: a whole address, or its local part.
/// - `initial`: the first name's initial, with a dot half the time, and the
///   surname ("J Kowalski", "J. Kowalski").
/// - `prefixes`: the first 3-5 letters of both names ("ann kowa"), each
///   shorter than its name.
/// - `email_typo`: an address's local part of 5+ letters with one edit.
/// - `nickname`: a nickname of the first name (the table of
///   [`schema::nicknames`]) and the surname ("Bob Smith").
///
/// Name queries are lower-cased about one time in four.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RelevanceQuery {
    pub q: String,
    pub kind: &'static str,
    /// `external_id` of every contact that is a correct answer, sorted:
    /// - full-name kinds (`typo1`, `accents`, `translit`, `reordered`,
    ///   `partial`): every contact whose folded first and last names equal
    ///   the target's (`partial` prefixes are chosen so that no other
    ///   contact with that first name has a surname starting with them);
    /// - `typo2` (a surname alone): every contact with that folded surname;
    /// - `phone`: every contact with a number whose digits, E.164 digits,
    ///   national significant number or trunk-prefixed national number end
    ///   with the typed digits;
    /// - `email`: every contact with that address (case-insensitive), or,
    ///   for a local part, with an address of that local part;
    /// - `initial`: every contact with that folded surname and a first
    ///   name starting with the initial;
    /// - `prefixes`: every contact whose folded names start with the two
    ///   prefixes;
    /// - `email_typo`: every contact with an address of the local part
    ///   before its typo;
    /// - `nickname`: every contact with that folded surname whose first
    ///   name is the target's, the nickname, or a name of the nickname.
    pub expect: Vec<String>,
}

/// Deserialized by hand: `kind` is one of [`KINDS`], not a borrowed string.
impl<'de> Deserialize<'de> for RelevanceQuery {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            q: String,
            kind: String,
            expect: Vec<String>,
        }
        let raw = Raw::deserialize(de)?;
        let kind = KINDS
            .iter()
            .copied()
            .find(|k| *k == raw.kind)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("unknown query kind `{}`", raw.kind))
            })?;
        Ok(RelevanceQuery {
            q: raw.q,
            kind,
            expect: raw.expect,
        })
    }
}

/// Up to `n` distinct queries over `contacts` (fewer only when the list
/// has too few candidates of a kind), in the shares typo1 30%, typo2 10%,
/// accents 10%, translit 5%, reordered 10%, partial 15%, phone 10%, email
/// 10%, shuffled; then 35% of `n` more, shuffled: initial 10%, prefixes
/// 10%, email_typo 10%, nickname 5%. Contacts without an `external_id` are
/// never expected.
pub fn relevance_queries(seed: u64, contacts: &[ContactFields], n: usize) -> Vec<RelevanceQuery> {
    let truth = Truth::new(contacts);
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut rng = rng_for(seed, STREAM_QUERIES);
    let mut out = Vec::with_capacity(n + n * 35 / 100);
    let first: Vec<(usize, usize)> = quotas(n).into_iter().enumerate().collect();
    generate(&mut rng, &truth, &first, &mut used, &mut out);
    out.shuffle(&mut rng);
    let mut rng = rng_for(seed, STREAM_MORE_QUERIES);
    let mut more = Vec::new();
    let rest: Vec<(usize, usize)> = MORE_SHARES
        .iter()
        .enumerate()
        .map(|(k, &share)| (INITIAL + k, n * share as usize / 100))
        .collect();
    generate(&mut rng, &truth, &rest, &mut used, &mut more);
    more.shuffle(&mut rng);
    out.extend(more);
    out
}

/// `quota` queries of each `(kind, quota)`, none typed twice.
fn generate(
    rng: &mut StdRng,
    truth: &Truth,
    quotas: &[(usize, usize)],
    used: &mut BTreeSet<String>,
    out: &mut Vec<RelevanceQuery>,
) {
    for &(kind, quota) in quotas {
        let candidates: Vec<usize> = (0..truth.contacts.len())
            .filter(|&i| truth.eligible(kind, i))
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let mut targets = BTreeSet::new();
        let mut made = 0;
        let mut attempts = 0;
        while made < quota && attempts < quota * 40 + 100 {
            attempts += 1;
            let target = candidates[rng.random_range(0..candidates.len())];
            if targets.contains(&target) && targets.len() < candidates.len() {
                continue;
            }
            let Some((q, matches)) = truth.make(rng, kind, target) else {
                continue;
            };
            let q = q.trim().to_owned();
            if q.is_empty() || !used.insert(q.to_lowercase()) {
                continue;
            }
            debug_assert!(matches.contains(&target), "{q}");
            targets.insert(target);
            made += 1;
            out.push(RelevanceQuery {
                q,
                kind: KINDS[kind],
                expect: truth.ids(&matches),
            });
        }
    }
}

/// The number of queries of each kind: the shares of `n`, remainders to
/// the largest fractions.
fn quotas(n: usize) -> [usize; 8] {
    let mut q = [0usize; 8];
    let mut rest: Vec<(usize, usize)> = Vec::new();
    for (k, &share) in SHARES.iter().enumerate() {
        let exact = n * share as usize;
        q[k] = exact / 100;
        rest.push((exact % 100, k));
    }
    rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let missing = n - q.iter().sum::<usize>();
    for &(_, k) in rest.iter().take(missing) {
        q[k] += 1;
    }
    q
}

/// The contacts, indexed for ground truth.
pub(super) struct Truth<'a> {
    contacts: &'a [ContactFields],
    first: Vec<Option<String>>,
    last: Vec<Option<String>>,
    by_name: BTreeMap<(String, String), Vec<usize>>,
    by_last: BTreeMap<String, Vec<usize>>,
    by_first: BTreeMap<String, Vec<usize>>,
    /// Every folded first and last name: a typo must not spell another.
    names: BTreeSet<String>,
    /// Per contact, the digit strings its numbers can be typed as.
    phone_forms: Vec<Vec<String>>,
}

impl<'a> Truth<'a> {
    pub(super) fn new(contacts: &'a [ContactFields]) -> Self {
        let folded = |s: &Option<String>| {
            s.as_deref()
                .map(|s| fold(s.trim()))
                .filter(|s| !s.is_empty())
        };
        let mut t = Truth {
            contacts,
            first: contacts.iter().map(|c| folded(&c.first_name)).collect(),
            last: contacts.iter().map(|c| folded(&c.last_name)).collect(),
            by_name: BTreeMap::new(),
            by_last: BTreeMap::new(),
            by_first: BTreeMap::new(),
            names: BTreeSet::new(),
            phone_forms: vec![Vec::new(); contacts.len()],
        };
        // parsed country by country: `phonenumber` keeps only the last 100
        // patterns compiled, and switching countries at every number is slow
        let mut by_country: Vec<usize> = (0..contacts.len()).collect();
        by_country.sort_by_key(|&i| (contacts[i].country.as_deref(), i));
        for i in by_country {
            let c = &contacts[i];
            t.phone_forms[i] = c
                .phones
                .iter()
                .flat_map(|p| phone_forms(p, c.country.as_deref()))
                .collect();
        }
        for (i, c) in contacts.iter().enumerate() {
            if c.external_id.is_none() {
                continue;
            }
            if let Some(f) = &t.first[i] {
                t.by_first.entry(f.clone()).or_default().push(i);
                t.names.insert(f.clone());
            }
            if let Some(l) = &t.last[i] {
                t.by_last.entry(l.clone()).or_default().push(i);
                t.names.insert(l.clone());
            }
            if let (Some(f), Some(l)) = (&t.first[i], &t.last[i]) {
                t.by_name.entry((f.clone(), l.clone())).or_default().push(i);
            }
        }
        t
    }

    fn ids(&self, matches: &[usize]) -> Vec<String> {
        let mut ids: Vec<String> = matches
            .iter()
            .filter_map(|&i| self.contacts[i].external_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Contacts whose folded names equal these.
    pub(super) fn same_name(&self, first: &str, last: &str) -> Vec<usize> {
        self.by_name
            .get(&(fold(first), fold(last)))
            .cloned()
            .unwrap_or_default()
    }

    /// Contacts whose folded surname equals this.
    pub(super) fn same_last(&self, last: &str) -> Vec<usize> {
        self.by_last.get(&fold(last)).cloned().unwrap_or_default()
    }

    /// Contacts with this first name and a surname starting with `prefix`.
    pub(super) fn name_prefix(&self, first: &str, prefix: &str) -> Vec<usize> {
        let prefix = fold(prefix);
        self.by_first
            .get(&fold(first))
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| {
                self.last[i]
                    .as_deref()
                    .is_some_and(|l| l.starts_with(&prefix))
            })
            .collect()
    }

    /// Contacts with this surname and a first name starting with `initial`.
    pub(super) fn initial(&self, initial: &str, last: &str) -> Vec<usize> {
        let initial = fold(initial);
        self.same_last(last)
            .into_iter()
            .filter(|&i| {
                self.first[i]
                    .as_deref()
                    .is_some_and(|f| f.starts_with(&initial))
            })
            .collect()
    }

    /// Contacts whose names start with these prefixes.
    pub(super) fn prefixes(&self, first: &str, last: &str) -> Vec<usize> {
        let (first, last) = (fold(first), fold(last));
        let mut out: Vec<usize> = self
            .by_last
            .range(last.clone()..)
            .take_while(|(l, _)| l.starts_with(&last))
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|&i| {
                self.first[i]
                    .as_deref()
                    .is_some_and(|f| f.starts_with(&first))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Contacts with this surname whose first name is `first`, `nickname`,
    /// or a name `nickname` stands for.
    pub(super) fn nickname(&self, first: &str, nickname: &str, last: &str) -> Vec<usize> {
        let (first, nickname) = (fold(first), fold(nickname));
        let related = schema::nicknames::related(&nickname);
        self.same_last(last)
            .into_iter()
            .filter(|&i| {
                self.first[i]
                    .as_deref()
                    .is_some_and(|f| f == first || f == nickname || related.contains(&f))
            })
            .collect()
    }

    /// Contacts with a number that ends with the digits of `typed`.
    pub(super) fn phone(&self, typed: &str) -> Vec<usize> {
        let digits = digits(typed);
        if digits.is_empty() {
            return Vec::new();
        }
        (0..self.contacts.len())
            .filter(|&i| self.contacts[i].external_id.is_some())
            .filter(|&i| self.phone_forms[i].iter().any(|f| f.ends_with(&digits)))
            .collect()
    }

    /// Contacts with the address `typed` or, when it has no `@`, with an
    /// address of that local part.
    pub(super) fn email(&self, typed: &str) -> Vec<usize> {
        let typed = typed.trim();
        let whole = typed.contains('@');
        (0..self.contacts.len())
            .filter(|&i| self.contacts[i].external_id.is_some())
            .filter(|&i| {
                self.contacts[i].emails.iter().any(|e| {
                    let e = e.trim();
                    if whole {
                        e.eq_ignore_ascii_case(typed) || e.to_lowercase() == typed.to_lowercase()
                    } else {
                        e.rsplit_once('@')
                            .is_some_and(|(local, _)| local.to_lowercase() == typed.to_lowercase())
                    }
                })
            })
            .collect()
    }

    fn names_of(&self, i: usize) -> Option<(&'a str, &'a str)> {
        let c = &self.contacts[i];
        self.first[i].as_ref()?;
        self.last[i].as_ref()?;
        Some((
            c.first_name.as_deref()?.trim(),
            c.last_name.as_deref()?.trim(),
        ))
    }

    fn eligible(&self, kind: usize, i: usize) -> bool {
        let c = &self.contacts[i];
        if c.external_id.is_none() {
            return false;
        }
        let names = self.names_of(i);
        let len = |s: &str| s.chars().count();
        match kind {
            TYPO1 => names.is_some_and(|(f, l)| len(f) >= 5 || len(l) >= 5),
            TYPO2 => self.last[i].is_some() && c.last_name.as_deref().is_some_and(|l| len(l) >= 9),
            ACCENTS => names.is_some_and(|(f, l)| strip_accents(f) != f || strip_accents(l) != l),
            TRANSLIT => names.is_some_and(|(f, l)| has_umlaut(f) || has_umlaut(l)),
            REORDERED => names.is_some(),
            PARTIAL => names.is_some_and(|(_, l)| len(l) >= 4),
            PHONE => !self.phone_forms[i].is_empty(),
            EMAIL => !c.emails.is_empty(),
            INITIAL => {
                names.is_some_and(|(f, _)| f.chars().next().is_some_and(char::is_alphabetic))
            }
            PREFIXES => names.is_some_and(|(f, l)| len(f) >= 4 && len(l) >= 4),
            EMAIL_TYPO => c.emails.iter().any(|e| {
                e.rsplit_once('@')
                    .is_some_and(|(local, _)| local.chars().count() >= 5)
            }),
            NICKNAME => self.first[i]
                .as_deref()
                .is_some_and(|f| !schema::nicknames::related(f).is_empty()),
            _ => false,
        }
    }

    /// A query of `kind` aimed at contact `i`, with its matches.
    fn make(&self, rng: &mut StdRng, kind: usize, i: usize) -> Option<(String, Vec<usize>)> {
        let c = &self.contacts[i];
        let lower = rng.random_range(0..4) == 0;
        let case = |q: String| if lower { q.to_lowercase() } else { q };
        match kind {
            TYPO1 => {
                let (f, l) = self.names_of(i)?;
                let long = |s: &str| s.chars().count() >= 5;
                let in_last = match (long(f), long(l)) {
                    (true, true) => rng.random_range(0..10) < 6,
                    (false, true) => true,
                    (true, false) => false,
                    (false, false) => return None,
                };
                let q = if in_last {
                    format!("{f} {}", typo(rng, l, 1, &self.names)?)
                } else {
                    format!("{} {l}", typo(rng, f, 1, &self.names)?)
                };
                Some((case(q), self.same_name(f, l)))
            }
            TYPO2 => {
                let l = c.last_name.as_deref()?.trim();
                Some((case(typo(rng, l, 2, &self.names)?), self.same_last(l)))
            }
            ACCENTS => {
                let (f, l) = self.names_of(i)?;
                let q = format!("{} {}", strip_accents(f), strip_accents(l));
                (q != format!("{f} {l}")).then(|| (case(q), self.same_name(f, l)))
            }
            TRANSLIT => {
                let (f, l) = self.names_of(i)?;
                let q = format!("{} {}", transliterate(f), transliterate(l));
                Some((case(q), self.same_name(f, l)))
            }
            REORDERED => {
                let (f, l) = self.names_of(i)?;
                Some((case(format!("{l} {f}")), self.same_name(f, l)))
            }
            PARTIAL => {
                let (f, l) = self.names_of(i)?;
                let chars: Vec<char> = l.chars().collect();
                let mut lens = [3, 4, 5];
                lens.shuffle(rng);
                let exact = self.same_name(f, l);
                lens.into_iter().find_map(|k| {
                    if k >= chars.len() || !chars[k - 1].is_alphabetic() {
                        return None;
                    }
                    let prefix: String = chars[..k].iter().collect();
                    // the prefix must not be as good a match for anyone else
                    (self.name_prefix(f, &prefix) == exact)
                        .then(|| (case(format!("{f} {prefix}")), exact.clone()))
                })
            }
            PHONE => {
                let country = c.country.as_deref();
                let parsed: Vec<(&str, phonenumber::PhoneNumber)> = c
                    .phones
                    .iter()
                    .filter_map(|p| Some((p.as_str(), parse_phone(p, country)?)))
                    .collect();
                if parsed.is_empty() {
                    return None;
                }
                let (raw, number) = &parsed[rng.random_range(0..parsed.len())];
                let q = retype_phone(rng, raw, number)?;
                (q != raw.trim()).then(|| {
                    let m = self.phone(&q);
                    (q, m)
                })
            }
            EMAIL => {
                let e = c.emails[rng.random_range(0..c.emails.len())].trim();
                let q = if rng.random_range(0..2) == 0 {
                    e.to_lowercase()
                } else {
                    e.rsplit_once('@')?.0.to_lowercase()
                };
                let m = self.email(&q);
                Some((q, m))
            }
            INITIAL => {
                let (f, l) = self.names_of(i)?;
                let initial: String = f.chars().take(1).collect();
                let dot = if rng.random_range(0..2) == 0 { "." } else { "" };
                Some((
                    case(format!("{initial}{dot} {l}")),
                    self.initial(&initial, l),
                ))
            }
            PREFIXES => {
                let (f, l) = self.names_of(i)?;
                let cut = |rng: &mut StdRng, s: &str| -> Option<String> {
                    let chars: Vec<char> = s.chars().collect();
                    let k = rng.random_range(3..=5usize).min(chars.len() - 1);
                    chars[..k]
                        .iter()
                        .all(|c| c.is_alphabetic())
                        .then(|| chars[..k].iter().collect())
                };
                let (fp, lp) = (cut(rng, f)?, cut(rng, l)?);
                Some((case(format!("{fp} {lp}")), self.prefixes(&fp, &lp)))
            }
            EMAIL_TYPO => {
                let locals: Vec<&str> = c
                    .emails
                    .iter()
                    .filter_map(|e| e.trim().rsplit_once('@').map(|(local, _)| local))
                    .filter(|local| local.chars().count() >= 5)
                    .collect();
                let local = locals[rng.random_range(0..locals.len())].to_lowercase();
                let q = typo(rng, &local, 1, &self.names)?;
                // a typo that spells another address is not a typo
                self.email(&q).is_empty().then(|| {
                    let m = self.email(&local);
                    (q, m)
                })
            }
            NICKNAME => {
                let (f, l) = self.names_of(i)?;
                let related = schema::nicknames::related(self.first[i].as_deref()?);
                let nick = related[rng.random_range(0..related.len())];
                let mut chars = nick.chars();
                let nick: String = chars.next()?.to_uppercase().chain(chars).collect();
                Some((case(format!("{nick} {l}")), self.nickname(f, &nick, l)))
            }
            _ => None,
        }
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Parses a number as `schema::validate::normalize_phone` does; `None`
/// unless it is valid.
fn parse_phone(raw: &str, country: Option<&str>) -> Option<phonenumber::PhoneNumber> {
    let region = country.filter(|c| c.len() == 2).and_then(|c| {
        c.to_ascii_uppercase()
            .parse::<phonenumber::country::Id>()
            .ok()
    });
    let number = phonenumber::parse(region, raw).ok()?;
    phonenumber::is_valid(&number).then_some(number)
}

/// The digit strings a stored number can be typed as: its digits as
/// written, its E.164 digits, its national significant number and that
/// with a trunk `0`.
fn phone_forms(raw: &str, country: Option<&str>) -> Vec<String> {
    let mut forms = vec![digits(raw)];
    if let Some(number) = parse_phone(raw, country) {
        let e164 = digits(&number.format().mode(phonenumber::Mode::E164).to_string());
        let cc = number.code().value().to_string();
        if let Some(nsn) = e164.strip_prefix(&cc) {
            forms.push(format!("0{nsn}"));
            forms.push(nsn.to_owned());
        }
        forms.push(e164);
    }
    forms.retain(|f| !f.is_empty());
    forms.sort();
    forms.dedup();
    forms
}

/// The number as someone else would type it: national if it is stored
/// international and the other way round (as formatted, with dashes, or
/// digits only), or just its last 6-8 digits.
fn retype_phone(rng: &mut StdRng, raw: &str, number: &phonenumber::PhoneNumber) -> Option<String> {
    use phonenumber::Mode;
    let e164 = number.format().mode(Mode::E164).to_string();
    if rng.random_range(0..100) < 40 {
        let d = digits(&e164);
        let k = rng.random_range(6..=8usize);
        return (d.len() > k + 2).then(|| d[d.len() - k..].to_owned());
    }
    let stored_intl = raw.trim_start().starts_with('+');
    let mode = if stored_intl {
        Mode::National
    } else {
        Mode::International
    };
    let formatted = number.format().mode(mode).to_string();
    let q = match rng.random_range(0..3) {
        0 => formatted,
        1 if !formatted.contains(['(', ')']) => formatted.replace(' ', "-"),
        _ if stored_intl => digits(&formatted),
        _ => e164,
    };
    Some(q)
}

fn has_umlaut(s: &str) -> bool {
    s.contains(['ä', 'ö', 'ü', 'Ä', 'Ö', 'Ü'])
}

/// Diacritics stripped, case kept: Jørgen Müller → Jorgen Muller,
/// Łukasz → Lukasz, Æbbe → Aebbe.
pub(super) fn strip_accents(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut buf = [0u8; 4];
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
            continue;
        }
        let f = fold(c.encode_utf8(&mut buf));
        if c.is_uppercase() {
            let mut it = f.chars();
            if let Some(head) = it.next() {
                out.extend(head.to_uppercase());
                out.push_str(it.as_str());
            }
        } else {
            out.push_str(&f);
        }
    }
    out
}

/// German spelling without umlauts, other diacritics stripped:
/// Jörg Weiß → Joerg Weiss.
pub(super) fn transliterate(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'Ä' => out.push_str("Ae"),
            'Ö' => out.push_str("Oe"),
            'Ü' => out.push_str("Ue"),
            c => out.push(c),
        }
    }
    strip_accents(&out)
}

/// The neighbours of a letter on a QWERTY keyboard.
fn neighbours(c: char) -> &'static str {
    match c {
        'q' => "wa",
        'w' => "qeas",
        'e' => "wrsd",
        'r' => "etdf",
        't' => "ryfg",
        'y' => "tugh",
        'u' => "yihj",
        'i' => "uojk",
        'o' => "ipkl",
        'p' => "ol",
        'a' => "qwsz",
        's' => "awedxz",
        'd' => "serfcx",
        'f' => "drtgvc",
        'g' => "ftyhbv",
        'h' => "gyujnb",
        'j' => "huikmn",
        'k' => "jiolm",
        'l' => "kop",
        'z' => "asx",
        'x' => "zsdc",
        'c' => "xdfv",
        'v' => "cfgb",
        'b' => "vghn",
        'n' => "bhjm",
        'm' => "njk",
        _ => "",
    }
}

/// The base letter of a letter that folds to exactly one ASCII letter.
fn base(c: char) -> Option<char> {
    if c.is_ascii_alphabetic() {
        return Some(c.to_ascii_lowercase());
    }
    if !c.is_alphabetic() {
        return None;
    }
    let mut buf = [0u8; 4];
    let f = fold(c.encode_utf8(&mut buf));
    let mut it = f.chars();
    match (it.next(), it.next()) {
        (Some(b), None) if b.is_ascii_lowercase() => Some(b),
        _ => None,
    }
}

fn upper(c: char) -> char {
    c.to_uppercase().next().unwrap_or(c)
}

fn lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// `word` with exactly `edits` typing errors (optimal string alignment
/// distance between the folded forms), not spelling any name in `names`.
pub(super) fn typo(
    rng: &mut StdRng,
    word: &str,
    edits: usize,
    names: &BTreeSet<String>,
) -> Option<String> {
    let want: Vec<char> = fold(word).chars().collect();
    for _ in 0..30 {
        let mut chars: Vec<char> = word.chars().collect();
        if !(0..edits).all(|_| edit(rng, &mut chars)) {
            continue;
        }
        let s: String = chars.iter().collect();
        let f = fold(&s);
        let got: Vec<char> = f.chars().collect();
        if osa(&want, &got) == edits && !names.contains(&f) {
            return Some(s);
        }
    }
    None
}

/// One typing error: a keyboard neighbour (35%), a letter left out (25%),
/// one typed too many (20%), two swapped (20%). One time in ten the error
/// is at the first letter, otherwise after it.
fn edit(rng: &mut StdRng, chars: &mut Vec<char>) -> bool {
    let first = rng.random_range(0..10) == 0;
    let letters: Vec<usize> = (0..chars.len())
        .filter(|&i| base(chars[i]).is_some())
        .collect();
    let at: Vec<usize> = if first {
        letters.iter().copied().take_while(|&i| i == 0).collect()
    } else {
        letters.iter().copied().filter(|&i| i > 0).collect()
    };
    if at.is_empty() {
        return false;
    }
    let neighbour = |rng: &mut StdRng, b: char| {
        let options = neighbours(b).as_bytes();
        (!options.is_empty()).then(|| char::from(options[rng.random_range(0..options.len())]))
    };
    match rng.random_range(0..100) {
        0..35 => {
            let i = at[rng.random_range(0..at.len())];
            let Some(mut n) = base(chars[i]).and_then(|b| neighbour(rng, b)) else {
                return false;
            };
            if chars[i].is_uppercase() {
                n = n.to_ascii_uppercase();
            }
            chars[i] = n;
        }
        35..60 => {
            if chars.len() <= 2 {
                return false;
            }
            let i = at[rng.random_range(0..at.len())];
            let removed = chars.remove(i);
            if i == 0 && removed.is_uppercase() {
                chars[0] = upper(chars[0]);
            }
        }
        60..80 => {
            if first {
                // a neighbour of the first letter typed before it
                let Some(n) = base(chars[0]).and_then(|b| neighbour(rng, b)) else {
                    return false;
                };
                if chars[0].is_uppercase() {
                    chars[0] = lower(chars[0]);
                    chars.insert(0, n.to_ascii_uppercase());
                } else {
                    chars.insert(0, n);
                }
            } else {
                // after a letter: that letter doubled, or a neighbour
                let i = letters[rng.random_range(0..letters.len())];
                let Some(b) = base(chars[i]) else {
                    return false;
                };
                let n = match neighbour(rng, b) {
                    Some(n) if rng.random_range(0..2) == 0 => n,
                    _ => b,
                };
                chars.insert(i + 1, n);
            }
        }
        _ => {
            let pairs: Vec<usize> = at
                .iter()
                .copied()
                .filter(|&i| {
                    i + 1 < chars.len()
                        && base(chars[i + 1]).is_some()
                        && base(chars[i]) != base(chars[i + 1])
                })
                .collect();
            if pairs.is_empty() {
                return false;
            }
            let i = pairs[rng.random_range(0..pairs.len())];
            if i == 0 && chars[0].is_uppercase() {
                let (a, b) = (chars[0], chars[1]);
                chars[0] = upper(b);
                chars[1] = lower(a);
            } else {
                chars.swap(i, i + 1);
            }
        }
    }
    true
}

/// Optimal string alignment distance (Levenshtein plus adjacent swaps).
pub(super) fn osa(a: &[char], b: &[char]) -> usize {
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(id: &str, first: &str, last: &str, country: &str) -> ContactFields {
        ContactFields {
            external_id: Some(id.into()),
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            country: Some(country.into()),
            ..Default::default()
        }
    }

    fn hand_made() -> Vec<ContactFields> {
        let mut v = vec![
            contact("a", "Jürgen", "Müller", "DE"),
            contact("b", "Jurgen", "Muller", "FR"),
            contact("c", "JÜRGEN", "MÜLLER", "CH"),
            contact("d", "Anna", "Müller", "DE"),
            contact("e", "Anna", "Müllerová", "CZ"),
            contact("f", "Søren", "Jørgensen", "DK"),
            contact("g", "Soren", "Jorgensen", "NO"),
            contact("h", "Anna", "Svensson", "SE"),
        ];
        v[0].phones = vec!["+46 8 123 456 78".into()];
        v[1].phones = vec!["08-123 456 78".into()];
        v[1].country = Some("SE".into());
        v[2].phones = vec!["+41 44 999 56 78".into()];
        v[3].phones = vec!["(415) 555-2671".into()];
        v[3].country = Some("US".into());
        v[0].emails = vec!["anna.svensson@acme.se".into()];
        v[1].emails = vec!["Anna.Svensson@gmail.com".into()];
        v[7].emails = vec!["anna.svensson@other.se".into(), "a.s@x.se".into()];
        v.push(ContactFields {
            last_name: Some("Müller".into()),
            ..Default::default()
        });
        v
    }

    fn ids(t: &Truth, m: Vec<usize>) -> Vec<String> {
        t.ids(&m)
    }

    #[test]
    fn ground_truth_of_hand_made_cases() {
        let list = hand_made();
        let t = Truth::new(&list);
        assert_eq!(ids(&t, t.same_name("Jurgen", "Muller")), ["a", "b", "c"]);
        assert_eq!(ids(&t, t.same_name("jürgen", "müller")), ["a", "b", "c"]);
        assert_eq!(ids(&t, t.same_name("Soren", "Jorgensen")), ["f", "g"]);
        // the contact without an id is never expected
        assert_eq!(ids(&t, t.same_last("Muller")), ["a", "b", "c", "d"]);
        assert_eq!(ids(&t, t.name_prefix("Anna", "Mül")), ["d", "e"]);
        assert_eq!(ids(&t, t.name_prefix("Anna", "Mullero")), ["e"]);
        // national and international forms of one number, and its tail
        assert_eq!(ids(&t, t.phone("08 12345678")), ["a", "b"]);
        assert_eq!(ids(&t, t.phone("+46812345678")), ["a", "b"]);
        assert_eq!(ids(&t, t.phone("812345678")), ["a", "b"]);
        assert_eq!(ids(&t, t.phone("45678")), ["a", "b"]);
        assert_eq!(ids(&t, t.phone("5678")), ["a", "b", "c"]);
        assert_eq!(ids(&t, t.phone("044 999 56 78")), ["c"]);
        assert_eq!(ids(&t, t.phone("+1 415 555 2671")), ["d"]);
        assert_eq!(ids(&t, t.phone("4155552671")), ["d"]);
        assert!(t.phone("0812345679").is_empty());
        // whole address (case-insensitive) or local part
        assert_eq!(ids(&t, t.email("anna.svensson@gmail.com")), ["b"]);
        assert_eq!(ids(&t, t.email("anna.svensson")), ["a", "b", "h"]);
        assert_eq!(ids(&t, t.email("a.s")), ["h"]);
        assert!(t.email("anna").is_empty());
    }

    #[test]
    fn queries_over_hand_made_contacts() {
        let list = hand_made();
        let qs = relevance_queries(1, &list, 40);
        assert!(!qs.is_empty());
        for q in &qs {
            assert!(!q.expect.is_empty(), "{q:?}");
            let t = Truth::new(&list);
            match q.kind {
                "phone" => assert_eq!(q.expect, t.ids(&t.phone(&q.q)), "{q:?}"),
                "email" => assert_eq!(q.expect, t.ids(&t.email(&q.q)), "{q:?}"),
                "reordered" => {
                    let (l, f) = q.q.rsplit_once(' ').unwrap();
                    assert_eq!(q.expect, t.ids(&t.same_name(f, l)), "{q:?}");
                }
                "accents" => {
                    assert!(q.q.is_ascii(), "{q:?}");
                    let (f, l) = q.q.split_once(' ').unwrap();
                    assert_eq!(q.expect, t.ids(&t.same_name(f, l)), "{q:?}");
                }
                "translit" => assert!(q.q.is_ascii() && q.q.contains('e'), "{q:?}"),
                _ => {}
            }
        }
    }

    #[test]
    fn shares_add_up() {
        assert_eq!(quotas(500), [150, 50, 50, 25, 50, 75, 50, 50]);
        assert_eq!(quotas(7).iter().sum::<usize>(), 7);
        assert_eq!(quotas(1), [1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn typos_are_exact_edit_distances() {
        let mut rng = rng_for(9, 0);
        let names: BTreeSet<String> = ["mueller", "muller"].map(String::from).into();
        let mut first_changed = 0;
        for k in 0..400 {
            let word = ["Müller", "Jørgensen", "Wałęsa", "O'Brien", "van der Berg"][k % 5];
            let t = typo(&mut rng, word, 1, &names).unwrap();
            let (a, b): (Vec<char>, Vec<char>) =
                (fold(word).chars().collect(), fold(&t).chars().collect());
            assert_eq!(osa(&a, &b), 1, "{word} → {t}");
            first_changed += usize::from(a[0] != b[0]);
            let t2 = typo(&mut rng, "Schwarzenegger", 2, &names).unwrap();
            let b: Vec<char> = fold(&t2).chars().collect();
            assert_eq!(
                osa(&fold("Schwarzenegger").chars().collect::<Vec<_>>(), &b),
                2,
                "{t2}"
            );
        }
        assert!((20..=70).contains(&first_changed), "{first_changed}");
        assert_eq!(osa(&['a', 'b'], &['b', 'a']), 1);
    }

    #[test]
    fn accents_and_transliteration() {
        assert_eq!(strip_accents("Jørgen Müller"), "Jorgen Muller");
        assert_eq!(strip_accents("Łukasz Wałęsa"), "Lukasz Walesa");
        assert_eq!(strip_accents("Æbbe Weiß"), "Aebbe Weiss");
        assert_eq!(strip_accents("İbrahim Çelik"), "Ibrahim Celik");
        assert_eq!(transliterate("Jörg Weiß"), "Joerg Weiss");
        assert_eq!(
            transliterate("Über Müller-Lüdenscheidt"),
            "Ueber Mueller-Luedenscheidt"
        );
    }
}
