//! Deterministic synthetic CRM data: companies and contacts from 19
//! countries with their real spelling (Müller, Jørgensen, Wałęsa, Çelik,
//! O'Brien, van der Berg), valid local phone numbers written the way people
//! write them, addresses derived from the names, and a relevance query set
//! with its ground truth ([`relevance_queries`]).
//!
//! The same seed gives the same data on every machine: one `StdRng`
//! (ChaCha12) per stream, no hash-map iteration, no platform-dependent
//! floating point. `fixtures/relevance/` holds a checked-in sample that a
//! test regenerates and compares.

mod locales;
mod memories;
mod queries;

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schema::analysis::{fold, german_alternative};
use schema::{CompanyFields, ContactFields};
use serde::Serialize;

use locales::{
    BRAND_ENDS, BRAND_STEMS, COMPANY_NOTES, COMPANY_TAGS, CONTACT_TAGS, City, Dial, EVENTS,
    FREEMAIL, Feminine, Fmt, Group, INDUSTRIES, LOCALES, Locale, MONTHS, NOTES, PRODUCTS,
    SECTORS_EN, STAGES, TITLES, WEEKDAYS,
};
pub use memories::{AGENTS, SeedMemory, Subject, memories};
pub use queries::{KINDS, RelevanceQuery, relevance_queries};

const STREAM_COMPANIES: u64 = 1;
const STREAM_CONTACTS: u64 = 2;
const STREAM_QUERIES: u64 = 3;
const STREAM_EMAIL_PATTERNS: u64 = 4;
const STREAM_MORE_QUERIES: u64 = 5;

/// The random stream `stream` of `seed`.
fn rng_for(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The ISO country codes the generator draws contacts and companies from.
pub fn countries() -> impl Iterator<Item = &'static str> {
    LOCALES.iter().map(|l| l.code)
}

/// `n` companies `co0`..: a name in the style of its country ("Köhler
/// Maschinenbau GmbH", "Nordlink Analytics AB", "Müller & Schröder GmbH"),
/// an ASCII domain derived from the name (unique within the list), an
/// industry matching the name, a city and country, a few tags and
/// sometimes a note.
pub fn companies(seed: u64, n: usize) -> Vec<CompanyFields> {
    let mut rng = rng_for(seed, STREAM_COMPANIES);
    let mut names = BTreeSet::new();
    let mut domains = BTreeSet::new();
    (0..n)
        .map(|i| company(&mut rng, i, &mut names, &mut domains))
        .collect()
}

fn company(
    rng: &mut StdRng,
    i: usize,
    names: &mut BTreeSet<String>,
    domains: &mut BTreeSet<String>,
) -> CompanyFields {
    let li = pick_locale(rng);
    let loc = &LOCALES[li];
    let city = &loc.cities[skew(rng, loc.cities.len())];
    let (mut name, mut words, mut industry) = company_name(rng, loc);
    for _ in 0..20 {
        if !names.contains(&name) {
            break;
        }
        (name, words, industry) = company_name(rng, loc);
    }
    if names.contains(&name) {
        name = format!("{name} {}", city.name);
    }
    names.insert(name.clone());

    let joiner = if words.len() > 1 && rng.random_range(0..2) == 0 {
        "-"
    } else {
        ""
    };
    let base = words.join(joiner);
    let tld = match rng.random_range(0..100) {
        _ if loc.tld == "com" => "com",
        0..5 if industry == "Software" => "io",
        0..20 => "com",
        _ => loc.tld,
    };
    let mut domain = format!("{base}.{tld}");
    let mut k = 2;
    while domains.contains(&domain) {
        domain = format!("{base}{k}.{tld}");
        k += 1;
    }
    domains.insert(domain.clone());

    let mut tags = Vec::new();
    for _ in 0..rng.random_range(0..3) {
        let t = COMPANY_TAGS[rng.random_range(0..COMPANY_TAGS.len())];
        if !tags.iter().any(|x| x == t) {
            tags.push(t.to_owned());
        }
    }
    let notes = (rng.random_range(0..100) < 35).then(|| {
        let mut s = String::new();
        let tpl = pick(rng, COMPANY_NOTES);
        fill(rng, &mut s, tpl, loc);
        s
    });
    CompanyFields {
        external_id: Some(format!("co{i}")),
        name: Some(name),
        domain: Some(domain),
        industry: Some(industry.to_owned()),
        city: Some(city.name.to_owned()),
        region: (!city.region.is_empty()).then(|| city.region.to_owned()),
        country: Some(loc.code.to_owned()),
        tags,
        notes,
        custom: None,
    }
}

/// A company name, the ASCII words its domain is made of, its industry.
fn company_name(rng: &mut StdRng, loc: &Locale) -> (String, Vec<String>, &'static str) {
    let legal = pick(rng, loc.legal);
    let translit = loc.translit_emails;
    let surname = |rng: &mut StdRng| loc.last[skew(rng, loc.last.len())];
    let brand = |rng: &mut StdRng| {
        let end = pick(rng, BRAND_ENDS);
        format!("{}{end}", pick(rng, BRAND_STEMS))
    };
    match rng.random_range(0..100) {
        0..35 => {
            let last = surname(rng);
            let (sector, industry) = loc.sectors[rng.random_range(0..loc.sectors.len())];
            let words = vec![ascii_word(last, translit), ascii_word(sector, translit)];
            (format!("{last} {sector} {legal}"), words, industry)
        }
        35..50 => {
            let a = surname(rng);
            let mut b = surname(rng);
            while b == a {
                b = pick(rng, loc.last);
            }
            let words = vec![ascii_word(a, translit), ascii_word(b, translit)];
            (format!("{a} & {b} {legal}"), words, pick(rng, INDUSTRIES))
        }
        50..85 => {
            let brand = brand(rng);
            let (sector, industry) = SECTORS_EN[rng.random_range(0..SECTORS_EN.len())];
            let mut words = vec![ascii_word(&brand, false)];
            if rng.random_range(0..2) == 0 {
                words.push(ascii_word(sector, false));
            }
            (format!("{brand} {sector} {legal}"), words, industry)
        }
        _ => {
            let brand = brand(rng);
            let words = vec![ascii_word(&brand, false)];
            (format!("{brand} {legal}"), words, pick(rng, INDUSTRIES))
        }
    }
}

/// `n` contacts `c0`.., generated one at a time (memory does not grow with
/// `n`). About 90% work at one of `companies` (`company_external_id`; their
/// address is at its domain, and most live in its country); the rest have
/// free-mail addresses. Every contact passes [`ContactFields::validate`],
/// and every phone is valid for the contact's `country`.
pub fn contacts(
    seed: u64,
    n: usize,
    companies: &[CompanyFields],
) -> impl Iterator<Item = ContactFields> + use<> {
    let mut patterns = rng_for(seed, STREAM_EMAIL_PATTERNS);
    let cos = companies
        .iter()
        .filter_map(|c| {
            let id = c.external_id.clone()?;
            let locale = c
                .country
                .as_deref()
                .and_then(|cc| LOCALES.iter().position(|l| l.code.eq_ignore_ascii_case(cc)));
            let city = locale.and_then(|l| {
                let name = c.city.as_deref()?;
                LOCALES[l].cities.iter().position(|x| x.name == name)
            });
            let domain = c
                .domain
                .as_deref()
                .map(|d| d.trim().to_lowercase())
                .filter(|d| d.contains('.') && !d.contains(['@', ' ']));
            Some(Co {
                id,
                domain,
                locale,
                city,
                pattern: weighted(&mut patterns, WORK_PATTERNS),
            })
        })
        .collect();
    Contacts {
        rng: rng_for(seed, STREAM_CONTACTS),
        i: 0,
        n,
        cos,
        names: LOCALES.iter().map(prepare).collect(),
    }
}

/// A company as the contact generator needs it.
struct Co {
    id: String,
    domain: Option<String>,
    locale: Option<usize>,
    city: Option<usize>,
    /// Index into [`WORK_PATTERNS`]: each company has its own address style.
    pattern: usize,
}

/// A name as written, and the ASCII an address is made of.
struct Name {
    text: String,
    ascii: String,
}

struct Names {
    male: Vec<Name>,
    female: Vec<Name>,
    last: Vec<Name>,
    /// Women's surnames where they differ (same order as `last`).
    last_female: Option<Vec<Name>>,
}

fn prepare(loc: &Locale) -> Names {
    let name = |s: &str| Name {
        text: s.to_owned(),
        ascii: ascii_word(s, loc.translit_emails),
    };
    Names {
        male: loc.male.iter().map(|s| name(s)).collect(),
        female: loc.female.iter().map(|s| name(s)).collect(),
        last: loc.last.iter().map(|s| name(s)).collect(),
        last_female: (loc.feminine != Feminine::Same).then(|| {
            loc.last
                .iter()
                .map(|s| name(&feminine(s, loc.feminine)))
                .collect()
        }),
    }
}

/// A woman's form of a surname.
fn feminine(last: &str, rule: Feminine) -> String {
    match rule {
        Feminine::Same => last.to_owned(),
        Feminine::Polish => match last.strip_suffix("ki") {
            Some(stem) => format!("{stem}ka"),
            None => last.to_owned(),
        },
        Feminine::Czech => {
            if let Some(stem) = last.strip_suffix('ý') {
                format!("{stem}á")
            } else if let Some(stem) = last.strip_suffix("ek") {
                format!("{stem}ková")
            } else if let Some(stem) = last.strip_suffix("ec") {
                format!("{stem}cová")
            } else if let Some(stem) = last.strip_suffix('a') {
                format!("{stem}ová")
            } else {
                format!("{last}ová")
            }
        }
    }
}

/// Lower-case ASCII letters, digits and hyphens of a name, for addresses
/// and domains (umlauts spelled out when `translit`).
fn ascii_word(s: &str, translit: bool) -> String {
    let folded = if translit {
        german_alternative(s).unwrap_or_else(|| fold(s))
    } else {
        fold(s)
    };
    folded
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

struct Contacts {
    rng: StdRng,
    i: usize,
    n: usize,
    cos: Vec<Co>,
    names: Vec<Names>,
}

impl Iterator for Contacts {
    type Item = ContactFields;

    fn next(&mut self) -> Option<ContactFields> {
        if self.i >= self.n {
            return None;
        }
        let i = self.i;
        self.i += 1;
        Some(self.contact(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.n - self.i;
        (left, Some(left))
    }
}

/// Address styles at work, with their weight.
const WORK_PATTERNS: &[(u8, u32)] = &[
    (0, 40), // first.last
    (1, 15), // f.last
    (2, 8),  // firstlast
    (3, 6),  // first_last
    (4, 16), // flast
    (5, 6),  // last.first
    (6, 4),  // first
    (7, 5),  // last
];

impl Contacts {
    fn contact(&mut self, i: usize) -> ContactFields {
        let Self {
            rng, cos, names, ..
        } = self;
        let company =
            (!cos.is_empty() && rng.random_range(0..100) < 90).then(|| &cos[skew(rng, cos.len())]);
        let li = match company.and_then(|c| c.locale) {
            Some(l) if rng.random_range(0..100) < 85 => l,
            _ => pick_locale(rng),
        };
        let loc = &LOCALES[li];
        let names = &names[li];
        let female = rng.random_range(0..2) == 0;
        let first = if female {
            &names.female[skew(rng, names.female.len())]
        } else {
            &names.male[skew(rng, names.male.len())]
        };
        let li_last = skew(rng, names.last.len());
        let last = match (&names.last_female, female) {
            (Some(f), true) => &f[li_last],
            _ => &names.last[li_last],
        };

        let city = match company
            .filter(|c| c.locale == Some(li))
            .and_then(|c| c.city)
        {
            Some(ci) if rng.random_range(0..100) < 60 => &loc.cities[ci],
            _ => &loc.cities[skew(rng, loc.cities.len())],
        };

        let emails = emails(rng, loc, first, last, company);
        let phones = phones(rng, loc, city);

        let title = match rng.random_range(0..100) {
            0..55 => Some(TITLES[skew(rng, TITLES.len())]),
            55..88 if !loc.titles.is_empty() => Some(pick(rng, loc.titles)),
            55..88 => Some(pick(rng, TITLES)),
            _ => None,
        };
        let stage = STAGES[weighted(rng, STAGES)].0;
        let owner = format!("u_{:02}", 1 + skew(rng, 40));
        let n_tags = match rng.random_range(0..100) {
            0..45 => 0,
            45..77 => 1,
            77..93 => 2,
            _ => 3,
        };
        let mut tags: Vec<String> = Vec::with_capacity(n_tags);
        while tags.len() < n_tags {
            let t = CONTACT_TAGS[skew(rng, CONTACT_TAGS.len())];
            if !tags.iter().any(|x| x == t) {
                tags.push(t.to_owned());
            }
        }
        let notes = (rng.random_range(0..100) >= 30).then(|| {
            let mut s = String::with_capacity(96);
            let local = !loc.notes.is_empty() && rng.random_range(0..100) < 25;
            let tpl = if local {
                pick(rng, loc.notes)
            } else {
                pick(rng, NOTES)
            };
            fill(rng, &mut s, tpl, loc);
            if rng.random_range(0..100) < 30 {
                s.push(' ');
                let tpl = pick(rng, NOTES);
                fill(rng, &mut s, tpl, loc);
            }
            s
        });

        ContactFields {
            external_id: Some(format!("c{i}")),
            first_name: Some(first.text.clone()),
            last_name: Some(last.text.clone()),
            emails,
            phones,
            title: title.map(str::to_owned),
            company_id: None,
            company_external_id: company.map(|c| c.id.clone()),
            company_name: None,
            city: Some(city.name.to_owned()),
            region: (!city.region.is_empty()).then(|| city.region.to_owned()),
            country: Some(loc.code.to_owned()),
            lifecycle_stage: Some(stage.to_owned()),
            owner_id: Some(owner),
            tags,
            notes,
            custom: None,
        }
    }
}

fn emails(
    rng: &mut StdRng,
    loc: &Locale,
    first: &Name,
    last: &Name,
    company: Option<&Co>,
) -> Vec<String> {
    let mut out = Vec::with_capacity(2);
    if rng.random_range(0..100) < 4 {
        return out;
    }
    let (f, l) = (first.ascii.as_str(), last.ascii.as_str());
    let work = company.and_then(|c| Some((c.domain.as_deref()?, c.pattern)));
    let push_work = |rng: &mut StdRng, out: &mut Vec<String>, domain: &str, pattern: usize| {
        // one in ten does not follow the house style
        let p = if rng.random_range(0..10) == 0 {
            weighted(rng, WORK_PATTERNS)
        } else {
            pattern
        };
        let mut e = String::with_capacity(f.len() + l.len() + domain.len() + 3);
        let f0 = &f[..f.chars().next().map_or(0, char::len_utf8)];
        match WORK_PATTERNS[p].0 {
            0 => push_all(&mut e, &[f, ".", l]),
            1 => push_all(&mut e, &[f0, ".", l]),
            2 => push_all(&mut e, &[f, l]),
            3 => push_all(&mut e, &[f, "_", l]),
            4 => push_all(&mut e, &[f0, l]),
            5 => push_all(&mut e, &[l, ".", f]),
            6 => e.push_str(f),
            _ => e.push_str(l),
        }
        e.push('@');
        e.push_str(domain);
        out.push(e);
    };
    let push_free = |rng: &mut StdRng, out: &mut Vec<String>| {
        let domain = match rng.random_range(0..100) {
            0..40 if !loc.freemail.is_empty() => pick(rng, loc.freemail),
            _ => pick(rng, FREEMAIL),
        };
        let f0 = &f[..f.chars().next().map_or(0, char::len_utf8)];
        let year = (60 + rng.random_range(0..46)) % 100;
        let mut e = match rng.random_range(0..100) {
            0..35 => format!("{f}.{l}"),
            35..55 => format!("{f}.{l}{year:02}"),
            55..70 => format!("{f}{l}{}", rng.random_range(1..100)),
            70..80 => format!("{f}_{l}"),
            80..90 => format!("{f0}.{l}{year:02}"),
            _ => format!("{l}.{f}"),
        };
        e.push('@');
        e.push_str(domain);
        if !out.contains(&e) {
            out.push(e);
        }
    };
    match work {
        Some((domain, pattern)) if rng.random_range(0..100) < 92 => {
            push_work(rng, &mut out, domain, pattern);
            if rng.random_range(0..100) < 15 {
                push_free(rng, &mut out);
            }
        }
        _ => {
            push_free(rng, &mut out);
            if rng.random_range(0..100) < 15 {
                match work {
                    Some((domain, pattern)) => push_work(rng, &mut out, domain, pattern),
                    None => push_free(rng, &mut out),
                }
            }
        }
    }
    out
}

fn push_all(s: &mut String, parts: &[&str]) {
    for p in parts {
        s.push_str(p);
    }
}

/// None (18%), one (70%) or two (12%: a mobile and a landline) phones.
fn phones(rng: &mut StdRng, loc: &Locale, city: &City) -> Vec<String> {
    let count = match rng.random_range(0..100) {
        0..18 => 0,
        18..88 => 1,
        _ => 2,
    };
    let mut out = Vec::with_capacity(count);
    let first_mobile = rng.random_range(0..100) < loc.mobile_share;
    for k in 0..count {
        let mobile = if k == 0 { first_mobile } else { !first_mobile };
        let dial = if mobile {
            loc.mobile[rng.random_range(0..loc.mobile.len())]
        } else {
            city.dial
        };
        let intl = rng.random_range(0..100) < loc.intl_share;
        let fmts = match (mobile, intl) {
            (true, false) if !loc.mnat.is_empty() => loc.mnat,
            (true, true) if !loc.mintl.is_empty() => loc.mintl,
            (_, false) => loc.nat,
            (_, true) => loc.intl,
        };
        let fmt = fmts[rng.random_range(0..fmts.len())];
        let mut s = String::with_capacity(20);
        phone_number(rng, &mut s, dial, city, fmt);
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Writes a random number of `dial` (an `@` area is the city's) in `fmt`.
fn phone_number(rng: &mut StdRng, out: &mut String, dial: Dial, city: &City, fmt: Fmt) {
    let area = if dial.area == "@" {
        city.dial.area
    } else {
        dial.area
    };
    let mut digits = [0u8; 16];
    let len = usize::from(dial.len).min(digits.len());
    let pre = dial.pre.as_bytes();
    for (k, slot) in digits[..len].iter_mut().enumerate() {
        *slot = match pre.get(k) {
            Some(d) => *d,
            // the first free digit is never 0, 1 or 9 (special services)
            None if k == pre.len() => b'0' + rng.random_range(2..=8u8),
            None => b'0' + rng.random_range(0..=9u8),
        };
    }
    for ch in fmt.0.chars() {
        if ch == 'A' {
            out.push_str(area);
        } else {
            out.push(ch);
        }
    }
    group_digits(out, &digits[..len], fmt.1);
}

/// Writes `digits` grouped as `group` says.
fn group_digits(out: &mut String, digits: &[u8], group: Group) {
    let n = digits.len();
    let push = |out: &mut String, part: &[u8]| out.extend(part.iter().map(|&b| char::from(b)));
    let sizes: Vec<usize> = match group {
        Group::Plain => vec![n],
        Group::Pairs(_) => {
            let mut v = if n % 2 == 1 { vec![3] } else { vec![] };
            let rest = n - v.iter().sum::<usize>();
            v.extend(std::iter::repeat_n(2, rest / 2));
            v
        }
        Group::Threes(_) => {
            let mut v = vec![3; n / 3];
            match n % 3 {
                0 => {}
                1 if n >= 4 => {
                    v.pop();
                    v.extend([2, 2]);
                }
                r => v.push(r),
            }
            v
        }
        Group::Last4(_) if n > 6 => vec![n - 4, 4],
        Group::Last4(_) if n == 6 => vec![3, 3],
        Group::Last4(_) => vec![n],
    };
    let sep = match group {
        Group::Plain => None,
        Group::Pairs(c) | Group::Threes(c) | Group::Last4(c) => Some(c),
    };
    let mut at = 0;
    for (k, size) in sizes.into_iter().enumerate() {
        if k > 0
            && let Some(c) = sep
        {
            out.push(c);
        }
        push(out, &digits[at..at + size]);
        at += size;
    }
}

/// Writes `tpl` with its placeholders filled in.
fn fill(rng: &mut StdRng, out: &mut String, tpl: &str, loc: &Locale) {
    let mut rest = tpl;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        match &rest[open + 1..open + close] {
            "p" => out.push_str(pick(rng, PRODUCTS)),
            "e" => out.push_str(pick(rng, EVENTS)),
            "d" => out.push_str(pick(rng, WEEKDAYS)),
            "m" => out.push_str(pick(rng, MONTHS)),
            "c" => out.push_str(if rng.random_range(0..2) == 0 {
                pick(rng, loc.male)
            } else {
                pick(rng, loc.female)
            }),
            "n" => {
                let seats = 5 * rng.random_range(1..=100u32);
                out.push_str(&seats.to_string());
            }
            "q" => out.push_str(&rng.random_range(1..=4u32).to_string()),
            "y" => out.push_str(&rng.random_range(2019..=2027u32).to_string()),
            other => out.push_str(other),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// An index in `0..n`, the first ones more likely (the first n^(1/3)
/// times the average, 4× of 60): common names, big cities, busy companies.
fn skew(rng: &mut StdRng, n: usize) -> usize {
    // u^1.5 without `powf`, whose last bit may differ between platforms
    let u: f64 = rng.random();
    ((u * u.sqrt() * n as f64) as usize).min(n.saturating_sub(1))
}

/// The index of an entry, drawn by its weight.
fn weighted<T>(rng: &mut StdRng, items: &[(T, u32)]) -> usize {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut r = rng.random_range(0..total);
    for (k, (_, w)) in items.iter().enumerate() {
        if r < *w {
            return k;
        }
        r -= w;
    }
    items.len() - 1
}

fn pick_locale(rng: &mut StdRng) -> usize {
    let total: u32 = LOCALES.iter().map(|l| l.weight).sum();
    let mut r = rng.random_range(0..total);
    for (k, l) in LOCALES.iter().enumerate() {
        if r < l.weight {
            return k;
        }
        r -= l.weight;
    }
    LOCALES.len() - 1
}

/// One contact as a compact JSON line: empty fields left out, and
/// `company_external_id` kept (`ContactFields` itself does not serialize
/// it). Reads back as `ContactFields`.
pub fn contact_json(c: &ContactFields) -> String {
    compact_line(c, ("company_external_id", c.company_external_id.as_deref()))
}

/// One company as a compact JSON line (empty fields left out). Reads back
/// as `CompanyFields`.
pub fn company_json(c: &CompanyFields) -> String {
    compact_line(c, ("", None))
}

/// A record as JSON without its nulls and empty lists, plus one field serde
/// skips when writing.
fn compact_line<T: Serialize>(record: &T, extra: (&str, Option<&str>)) -> String {
    let mut v = serde_json::to_value(record).expect("a record serializes");
    if let serde_json::Value::Object(map) = &mut v {
        map.retain(|_, x| !(x.is_null() || x.as_array().is_some_and(Vec::is_empty)));
        if let (key, Some(value)) = extra {
            map.insert(key.to_owned(), value.into());
        }
    }
    v.to_string()
}

/// The seed of `fixtures/relevance/`.
pub const FIXTURE_SEED: u64 = 7;
/// Companies in `fixtures/relevance/companies.ndjson`.
pub const FIXTURE_COMPANIES: usize = 150;
/// Contacts in `fixtures/relevance/contacts.ndjson`.
pub const FIXTURE_CONTACTS: usize = 2_000;
/// Queries of the first eight kinds in `fixtures/relevance/queries.ndjson`
/// (the file holds 35 % more of the other four).
pub const FIXTURE_QUERIES: usize = 500;

/// The contents of `fixtures/relevance/{companies,contacts,queries}.ndjson`
/// as the generator makes them, by file name.
pub fn relevance_fixtures() -> [(&'static str, String); 3] {
    let cos = companies(FIXTURE_SEED, FIXTURE_COMPANIES);
    let people: Vec<ContactFields> = contacts(FIXTURE_SEED, FIXTURE_CONTACTS, &cos).collect();
    let queries = relevance_queries(FIXTURE_SEED, &people, FIXTURE_QUERIES);
    let lines = |it: &mut dyn Iterator<Item = String>| {
        it.fold(String::new(), |mut s, l| {
            s.push_str(&l);
            s.push('\n');
            s
        })
    };
    [
        ("companies.ndjson", lines(&mut cos.iter().map(company_json))),
        (
            "contacts.ndjson",
            lines(&mut people.iter().map(contact_json)),
        ),
        (
            "queries.ndjson",
            lines(
                &mut queries
                    .iter()
                    .map(|q| serde_json::to_string(q).expect("a query serializes")),
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use schema::validate::normalize_phone;

    use super::*;

    fn fixture_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/relevance")
    }

    /// Regenerates `fixtures/relevance/`:
    /// `cargo test -p crmsearch --lib write_relevance_fixtures -- --ignored`
    #[test]
    #[ignore]
    fn write_relevance_fixtures() {
        let dir = fixture_dir();
        std::fs::create_dir_all(&dir).unwrap();
        for (name, body) in relevance_fixtures() {
            std::fs::write(dir.join(name), body).unwrap();
        }
    }

    /// The seed-determinism test: the checked-in files are what the
    /// generator makes today, on this machine.
    #[test]
    fn fixtures_match_the_generator() {
        for (name, body) in relevance_fixtures() {
            let path = fixture_dir().join(name);
            let file = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for (k, (want, got)) in file.lines().zip(body.lines()).enumerate() {
                assert_eq!(
                    want,
                    got,
                    "{name} line {} differs from the generator (regenerate with write_relevance_fixtures if the change is intended)",
                    k + 1
                );
            }
            assert_eq!(file.lines().count(), body.lines().count(), "{name}");
        }
    }

    #[test]
    fn fixture_lines_read_back() {
        let [(_, cos), (_, people), (_, queries)] = relevance_fixtures();
        for l in cos.lines() {
            serde_json::from_str::<CompanyFields>(l)
                .unwrap()
                .validate()
                .unwrap();
        }
        let mut parsed: Vec<ContactFields> = people
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        parsed.sort_by(|a, b| a.country.cmp(&b.country));
        let mut with_company = 0;
        for c in parsed {
            with_company += usize::from(c.company_external_id.is_some());
            c.validate().unwrap();
        }
        assert!((1_650..=1_900).contains(&with_company), "{with_company}");
        for l in queries.lines() {
            let q: RelevanceQuery = serde_json::from_str(l).unwrap();
            assert!(!q.expect.is_empty(), "{q:?}");
        }
        let total = cos.len() + people.len() + queries.len();
        assert!(total < 1_500_000, "{total} bytes");
    }

    fn sample(seed: u64, n: usize) -> (Vec<CompanyFields>, Vec<ContactFields>) {
        let cos = companies(seed, n / 12 + 1);
        let people = contacts(seed, n, &cos).collect();
        (cos, people)
    }

    fn json(cos: &[CompanyFields], people: &[ContactFields]) -> Vec<String> {
        cos.iter()
            .map(company_json)
            .chain(people.iter().map(contact_json))
            .collect()
    }

    #[test]
    fn same_seed_same_output_other_seed_other_output() {
        let (a_cos, a) = sample(3, 400);
        let (b_cos, b) = sample(3, 400);
        let (c_cos, c) = sample(4, 400);
        assert_eq!(json(&a_cos, &a), json(&b_cos, &b));
        assert_ne!(json(&a_cos, &a), json(&c_cos, &c));
        let qa = relevance_queries(3, &a, 60);
        assert_eq!(qa, relevance_queries(3, &b, 60));
        assert_ne!(qa, relevance_queries(4, &a, 60));
        // a prefix of the stream does not depend on its length
        let short: Vec<_> = contacts(3, 50, &a_cos).collect();
        assert_eq!(json(&[], &short), json(&[], &a[..50]));
    }

    #[test]
    fn every_contact_and_company_validates() {
        let (cos, people) = sample(11, 2_000);
        for c in &cos {
            c.clone()
                .validate()
                .unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
        let ids: BTreeSet<_> = cos.iter().map(|c| c.external_id.clone().unwrap()).collect();
        let domains: BTreeSet<_> = cos.iter().map(|c| c.domain.clone().unwrap()).collect();
        assert_eq!(domains.len(), cos.len(), "domains are unique");
        // country by country, as `phonenumber` caches few compiled patterns
        let mut order: Vec<usize> = (0..people.len()).collect();
        order.sort_by_key(|&i| people[i].country.clone());
        for i in order {
            let c = &people[i];
            assert_eq!(c.external_id.as_deref(), Some(format!("c{i}").as_str()));
            if let Some(co) = &c.company_external_id {
                assert!(ids.contains(co), "{co}");
            }
            let v = c
                .clone()
                .validate()
                .unwrap_or_else(|e| panic!("{c:?}: {e}"));
            assert_eq!(v.emails.len(), c.emails.len(), "{c:?}");
            for e in &c.emails {
                assert!(e.is_ascii() && e == &e.to_lowercase(), "{e}");
            }
        }
    }

    #[test]
    fn phones_parse_for_their_country() {
        let (_, mut people) = sample(12, 2_000);
        // country by country, as `phonenumber` caches few compiled patterns
        people.sort_by(|a, b| a.country.cmp(&b.country));
        let mut counts = [0usize; 3];
        let mut intl = 0;
        for c in &people {
            counts[c.phones.len()] += 1;
            for p in &c.phones {
                intl += usize::from(p.starts_with('+'));
                let e164 = normalize_phone("p", p, c.country.as_deref()).unwrap();
                assert!(e164.starts_with('+'), "{p} ({:?}) is not valid", c.country);
            }
        }
        // ~18% none, ~70% one, ~12% two
        assert!((250..=480).contains(&counts[0]), "{counts:?}");
        assert!((1_250..=1_550).contains(&counts[1]), "{counts:?}");
        assert!((150..=340).contains(&counts[2]), "{counts:?}");
        assert!(intl > 300, "{intl}");
    }

    /// Every area and mobile prefix of every country, in every format.
    #[test]
    fn every_dial_plan_yields_valid_numbers() {
        let mut rng = rng_for(1, 99);
        let mut bad = Vec::new();
        let mut tried = 0;
        for loc in LOCALES {
            let mut plans: Vec<(bool, Dial, &City)> = Vec::new();
            for city in loc.cities {
                plans.push((false, city.dial, city));
            }
            for dial in loc.mobile {
                // a mobile plan of the city's area is tried in every city
                let cities = if dial.area == "@" {
                    loc.cities
                } else {
                    &loc.cities[..1]
                };
                plans.extend(cities.iter().map(|city| (true, *dial, city)));
            }
            for (mobile, dial, city) in plans {
                let fmts = [
                    if mobile && !loc.mnat.is_empty() {
                        loc.mnat
                    } else {
                        loc.nat
                    },
                    if mobile && !loc.mintl.is_empty() {
                        loc.mintl
                    } else {
                        loc.intl
                    },
                ];
                for fmt in fmts.into_iter().flatten() {
                    for _ in 0..6 {
                        let mut s = String::new();
                        phone_number(&mut rng, &mut s, dial, city, *fmt);
                        tried += 1;
                        let n = normalize_phone("p", &s, Some(loc.code)).unwrap();
                        if !n.starts_with('+') {
                            bad.push(format!("{} {} {s}", loc.code, city.name));
                        }
                    }
                }
            }
        }
        assert!(
            bad.is_empty(),
            "{} of {tried} invalid:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }

    #[test]
    fn locale_tables_are_rich_enough() {
        assert!(LOCALES.len() >= 14);
        let mut codes = BTreeSet::new();
        for l in LOCALES {
            assert!(codes.insert(l.code), "{} twice", l.code);
            let firsts = l.male.len() + l.female.len();
            assert!(firsts >= 40, "{}: {firsts} first names", l.code);
            assert!(
                l.last.len() >= 60,
                "{}: {} last names",
                l.code,
                l.last.len()
            );
            let uniq: BTreeSet<_> = l.last.iter().collect();
            assert_eq!(uniq.len(), l.last.len(), "{}: a last name twice", l.code);
            let uniq: BTreeSet<_> = l.male.iter().chain(l.female).collect();
            assert_eq!(uniq.len(), firsts, "{}: a first name twice", l.code);
            let names = prepare(l);
            let all = names.male.iter().chain(&names.female).chain(&names.last);
            for n in all.chain(names.last_female.iter().flatten()) {
                assert!(!n.ascii.is_empty() && n.ascii.is_ascii(), "{}", n.text);
                assert_eq!(n.text.trim(), n.text);
            }
            assert!(!l.cities.is_empty() && !l.mobile.is_empty() && !l.legal.is_empty());
            assert!(!l.nat.is_empty() && !l.intl.is_empty() && !l.sectors.is_empty());
        }
    }

    #[test]
    fn surnames_inflect_for_women() {
        assert_eq!(feminine("Kowalski", Feminine::Polish), "Kowalska");
        assert_eq!(feminine("Zawadzki", Feminine::Polish), "Zawadzka");
        assert_eq!(feminine("Nowak", Feminine::Polish), "Nowak");
        assert_eq!(feminine("Novák", Feminine::Czech), "Nováková");
        assert_eq!(feminine("Novotný", Feminine::Czech), "Novotná");
        assert_eq!(feminine("Svoboda", Feminine::Czech), "Svobodová");
        assert_eq!(feminine("Jelínek", Feminine::Czech), "Jelínková");
        assert_eq!(feminine("Němec", Feminine::Czech), "Němcová");
        assert_eq!(ascii_word("Müller", true), "mueller");
        assert_eq!(ascii_word("Müller", false), "muller");
        assert_eq!(ascii_word("O'Brien", false), "obrien");
        assert_eq!(ascii_word("van der Berg", false), "vanderberg");
        assert_eq!(ascii_word("Jean-Pierre", false), "jean-pierre");
        assert_eq!(ascii_word("Ó Súilleabháin", false), "osuilleabhain");
    }

    #[test]
    fn grouping() {
        let g = |d: &str, group| {
            let mut s = String::new();
            group_digits(&mut s, d.as_bytes(), group);
            s
        };
        assert_eq!(g("12345678", Group::Threes(' ')), "123 456 78");
        assert_eq!(g("1234567", Group::Threes(' ')), "123 45 67");
        assert_eq!(g("1234567", Group::Pairs(' ')), "123 45 67");
        assert_eq!(g("12345678", Group::Pairs('.')), "12.34.56.78");
        assert_eq!(g("5552671", Group::Last4('-')), "555-2671");
        assert_eq!(g("123", Group::Last4('-')), "123");
    }

    /// Prints what a sample looks like: locales, stages, kinds.
    #[test]
    fn distribution_summary() {
        let [(_, _), (_, people), (_, queries)] = relevance_fixtures();
        let mut by_country: BTreeMap<String, usize> = BTreeMap::new();
        for l in people.lines() {
            let c: ContactFields = serde_json::from_str(l).unwrap();
            *by_country.entry(c.country.unwrap()).or_default() += 1;
        }
        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        for l in queries.lines() {
            let q: RelevanceQuery = serde_json::from_str(l).unwrap();
            *by_kind.entry(q.kind.to_owned()).or_default() += 1;
        }
        println!("contacts by country: {by_country:?}");
        println!("queries by kind: {by_kind:?}");
        assert_eq!(by_country.len(), LOCALES.len());
        assert!(by_country.values().all(|&n| n >= 30), "{by_country:?}");
        assert_eq!(by_kind.get("typo1"), Some(&150));
        // the first eight kinds make FIXTURE_QUERIES, the last four 35 % more
        assert_eq!(
            by_kind.values().sum::<usize>(),
            FIXTURE_QUERIES + FIXTURE_QUERIES * 35 / 100
        );
        for kind in ["initial", "prefixes", "email_typo"] {
            assert_eq!(by_kind.get(kind), Some(&50), "{kind}");
        }
        assert_eq!(by_kind.get("nickname"), Some(&25));
    }

    /// `cargo test -p crmsearch --lib seed::tests::generation_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn generation_speed() {
        let cos = companies(5, 5_000);
        let n = 50_000;
        let start = std::time::Instant::now();
        let mut bytes = 0;
        for c in contacts(5, n, &cos) {
            bytes += c.emails.len() + c.phones.len();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{n} contacts in {secs:.3} s: {:.0} contacts/s ({bytes})",
            n as f64 / secs
        );
    }
}
