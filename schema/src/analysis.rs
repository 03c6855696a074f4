//! Text normalisation for contact search, and the tokenizers the index and
//! the query side share (registered on every index by [`register`]).
//!
//! - [`fold`]: lowercase, NFKD with marks stripped, and the letters NFKD
//!   leaves alone (ß→ss, ø→o, ł→l, æ→ae, œ→oe, đ→d, ı→i, þ→th).
//! - [`german_alternative`]: the transliteration ü→ue, ö→oe, ä→ae, so
//!   "Mueller", "Muller" and "Müller" can all find Müller.
//! - [`phone_tokens`]: a number's digits, its national part, and every
//!   trailing run of 4+ digits.
//! - [`email_tokens`]: the address, its local part, the local part's pieces
//!   split on `. _ - +`, the domain and its labels.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// Lowercased, accents stripped, special letters spelled out.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            'ß' => out.push_str("ss"),
            'ø' => out.push('o'),
            'ł' => out.push('l'),
            'æ' => out.push_str("ae"),
            'œ' => out.push_str("oe"),
            'đ' | 'ð' => out.push('d'),
            'ı' => out.push('i'),
            'þ' => out.push_str("th"),
            c if c.is_ascii() => out.push(c),
            c => push_decomposed(&mut out, c),
        }
    }
    out
}

/// The base letter of a Latin letter with diacritics (the NFKD of the
/// common European letters, marks dropped); other characters as they are.
fn push_decomposed(out: &mut String, c: char) {
    const TABLE: &[(&str, char)] = &[
        ("àáâãäåāăą", 'a'),
        ("çćĉċč", 'c'),
        ("ďḍ", 'd'),
        ("èéêëēĕėęě", 'e'),
        ("ĝğġģ", 'g'),
        ("ĥħ", 'h'),
        ("ìíîïĩīĭįİ", 'i'),
        ("ĵ", 'j'),
        ("ķ", 'k'),
        ("ĺļľŀ", 'l'),
        ("ñńņňŉ", 'n'),
        ("òóôõöōŏő", 'o'),
        ("ŕŗř", 'r'),
        ("śŝşšș", 's'),
        ("ţťŧț", 't'),
        ("ùúûüũūŭůűų", 'u'),
        ("ŵ", 'w'),
        ("ýÿŷ", 'y'),
        ("źżž", 'z'),
    ];
    match TABLE.iter().find(|(from, _)| from.contains(c)) {
        Some((_, base)) => out.push(*base),
        // combining marks on their own are dropped
        None if ('\u{300}'..='\u{36f}').contains(&c) => {}
        None => out.push(c),
    }
}

/// The German transliteration of umlauts, folded; `None` when the text
/// has none (the plain fold covers it).
pub fn german_alternative(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    if !lower.contains(['ä', 'ö', 'ü']) {
        return None;
    }
    let spelled = lower
        .replace('ä', "ae")
        .replace('ö', "oe")
        .replace('ü', "ue");
    Some(fold(&spelled))
}

/// Digit tokens of a phone number: all its digits, the national number
/// (without the country code when `normalized` is E.164, and with a trunk
/// `0` prepended as it is dialled at home), and every trailing run of at
/// least 4 digits.
pub fn phone_tokens(raw: &str, normalized: &str) -> Vec<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let mut out: Vec<String> = Vec::new();
    let mut push = |t: String| {
        if t.len() >= 4 && !out.contains(&t) {
            out.push(t);
        }
    };
    push(digits.clone());
    let e164: String = normalized.chars().filter(char::is_ascii_digit).collect();
    push(e164.clone());
    if normalized.starts_with('+') {
        for cc_len in 1..=3 {
            if e164.len() > cc_len + 4 && is_country_code(&e164[..cc_len]) {
                let national = &e164[cc_len..];
                push(national.to_owned());
                push(format!("0{national}"));
                break;
            }
        }
    }
    for start in 1..digits.len().saturating_sub(3) {
        push(digits[start..].to_owned());
    }
    out
}

/// Country calling codes in use (ITU E.164), as a compact test.
fn is_country_code(cc: &str) -> bool {
    const ONE_OR_TWO: &[&str] = &[
        "1", "7", "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44",
        "45", "46", "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61",
        "62", "63", "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95",
        "98",
    ];
    match cc.len() {
        1 | 2 => ONE_OR_TWO.contains(&cc),
        // three-digit codes: every prefix not taken by a shorter code
        3 => !ONE_OR_TWO.contains(&&cc[..1]) && !ONE_OR_TWO.contains(&&cc[..2]),
        _ => false,
    }
}

/// Tokens of an email address: whole, local part, the local part's pieces,
/// the domain and its labels. Lowercased.
pub fn email_tokens(email: &str) -> Vec<String> {
    let email = email.trim().to_lowercase();
    let mut out = vec![email.clone()];
    let mut push = |t: &str| {
        if !t.is_empty() && !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    };
    let domain = match email.rsplit_once('@') {
        Some((local, domain)) => {
            push(local);
            for piece in local.split(['.', '_', '-', '+']) {
                push(piece);
            }
            push(domain);
            domain
        }
        None => email.as_str(),
    };
    // the domain's labels: `mail`, `example`, `se` of `mail.example.se`
    if domain.contains('.') {
        for label in domain.split('.') {
            push(label);
        }
    }
    out
}

/// The local parts of addresses, lowercased, each once (those longer than
/// [`MAX_TOKEN_BYTES`] left out).
pub fn email_locals<'a>(emails: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = emails
        .filter_map(|e| {
            e.trim()
                .rsplit_once('@')
                .map(|(local, _)| local.to_lowercase())
        })
        .filter(|l| !l.is_empty() && l.len() <= MAX_TOKEN_BYTES)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The tokenizer of name-like text fields (names, company, title, city,
/// notes, tags): see [`index_tokens`].
pub const FOLD_TOKENIZER: &str = "crm_fold";
/// The fast-field normaliser of sort keys: the whole text folded, one token.
pub const SORT_TOKENIZER: &str = "crm_sort";
/// Longest token indexed (bytes); longer words are not searchable.
pub const MAX_TOKEN_BYTES: usize = 64;
/// Longest sort key (characters).
const MAX_SORT_CHARS: usize = 48;

/// A word of a text: its byte span in the original and its folded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub from: usize,
    pub to: usize,
    pub folded: String,
}

/// The runs of letters and digits of `text`, folded.
pub fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (c.is_alphanumeric() || is_mark(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let folded = fold(&text[s..i]);
                if !folded.is_empty() {
                    out.push(Word {
                        from: s,
                        to: i,
                        folded,
                    });
                }
                start = None;
            }
            (true, Some(_)) | (false, None) => {}
        }
    }
    out
}

fn is_mark(c: char) -> bool {
    ('\u{300}'..='\u{36f}').contains(&c)
}

/// What the index holds for a name-like text: each word folded; the German
/// transliteration of a word with umlauts at the same position; and words
/// joined by an apostrophe or a hyphen also as one word ("O'Brien" →
/// `o`, `brien`, `obrien`; "Jean-Pierre" → `jean`, `pierre`, `jeanpierre`).
pub fn index_tokens(text: &str) -> Vec<Token> {
    let ws = words(text);
    let mut out: Vec<Token> = Vec::with_capacity(ws.len() + 2);
    let push = |out: &mut Vec<Token>, from: usize, to: usize, position: usize, t: String| {
        if t.len() <= MAX_TOKEN_BYTES {
            out.push(Token {
                offset_from: from,
                offset_to: to,
                position,
                text: t,
                position_length: 1,
            });
        }
    };
    let mut group_start = 0;
    for (i, w) in ws.iter().enumerate() {
        push(&mut out, w.from, w.to, i, w.folded.clone());
        if let Some(alt) = german_alternative(&text[w.from..w.to]) {
            push(&mut out, w.from, w.to, i, alt);
        }
        let joined_to_next = ws.get(i + 1).is_some_and(|next| {
            let gap = &text[w.to..next.from];
            gap.chars().count() == 1 && gap.contains(['\'', '’', '-', '‐'])
        });
        if !joined_to_next {
            if i > group_start {
                let joined: String = ws[group_start..=i]
                    .iter()
                    .map(|w| w.folded.as_str())
                    .collect();
                push(&mut out, ws[group_start].from, w.to, group_start, joined);
            }
            group_start = i + 1;
        }
    }
    out
}

/// The sort key of a text: folded, words joined by single spaces, cut.
pub fn sort_key(text: &str) -> String {
    let ws = words(text);
    let mut key = String::new();
    for w in ws {
        if !key.is_empty() {
            key.push(' ');
        }
        key.push_str(&w.folded);
    }
    key.chars().take(MAX_SORT_CHARS).collect()
}

/// Registers this crate's tokenizers on an index (every time it is opened).
pub fn register(index: &tantivy::Index) {
    index.tokenizers().register(FOLD_TOKENIZER, FoldTokenizer);
    index
        .fast_field_tokenizer()
        .register(SORT_TOKENIZER, SortTokenizer);
}

/// See [`index_tokens`].
#[derive(Debug, Clone, Default)]
pub struct FoldTokenizer;

/// See [`sort_key`]; no token for a text without words.
#[derive(Debug, Clone, Default)]
pub struct SortTokenizer;

/// A token stream over tokens computed up front.
#[derive(Debug)]
pub struct VecTokenStream {
    tokens: Vec<Token>,
    next: usize,
}

impl VecTokenStream {
    fn new(tokens: Vec<Token>) -> Self {
        Self { tokens, next: 0 }
    }
}

impl TokenStream for VecTokenStream {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }
    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

impl Tokenizer for FoldTokenizer {
    type TokenStream<'a> = VecTokenStream;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream {
        VecTokenStream::new(index_tokens(text))
    }
}

impl Tokenizer for SortTokenizer {
    type TokenStream<'a> = VecTokenStream;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream {
        let key = sort_key(text);
        let tokens = if key.is_empty() {
            Vec::new()
        } else {
            vec![Token {
                offset_from: 0,
                offset_to: text.len(),
                position: 0,
                text: key,
                position_length: 1,
            }]
        };
        VecTokenStream::new(tokens)
    }
}

/// The optimal-string-alignment distance (Levenshtein with a transposition
/// of neighbours as one edit), as the Levenshtein automata count it, capped
/// at `max + 1`.
pub fn edit_distance(a: &str, b: &str, max: u32) -> u32 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max as usize {
        return max + 1;
    }
    let width = b.len() + 1;
    let mut prev2 = vec![0u32; width];
    let mut prev: Vec<u32> = (0..width as u32).collect();
    let mut cur = vec![0u32; width];
    for i in 1..=a.len() {
        cur[0] = i as u32;
        for j in 1..=b.len() {
            let cost = u32::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()].min(max + 1)
}

/// The least edit distance between `word` and any prefix of `text` (how far
/// a word being typed is from becoming `text`).
pub fn prefix_distance(word: &str, text: &str, max: u32) -> u32 {
    let n = word.chars().count();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut best = max + 1;
    let lo = n.saturating_sub(max as usize);
    for len in lo..=(n + max as usize).min(chars.len()) {
        let end = chars.get(len).map_or(text.len(), |(i, _)| *i);
        best = best.min(edit_distance(word, &text[..end], max));
        if best == 0 {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<(usize, String)> {
        index_tokens(text)
            .into_iter()
            .map(|t| (t.position, t.text))
            .collect()
    }

    #[test]
    fn tokens_of_names() {
        assert_eq!(
            texts("Jürgen Müller"),
            vec![
                (0, "jurgen".into()),
                (0, "juergen".into()),
                (1, "muller".into()),
                (1, "mueller".into())
            ]
        );
        assert_eq!(
            texts("O'Brien"),
            vec![(0, "o".into()), (1, "brien".into()), (0, "obrien".into())]
        );
        assert_eq!(
            texts("Jean-Pierre Lefèvre"),
            vec![
                (0, "jean".into()),
                (1, "pierre".into()),
                (0, "jeanpierre".into()),
                (2, "lefevre".into())
            ]
        );
        assert_eq!(texts("  ,, "), vec![]);
        assert_eq!(sort_key("  van der Berg"), "van der berg");
        assert_eq!(sort_key("Øberg"), "oberg");
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("smith", "smith", 2), 0);
        assert_eq!(edit_distance("smiht", "smith", 2), 1);
        assert_eq!(edit_distance("smth", "smith", 2), 1);
        assert_eq!(edit_distance("xmith", "smith", 2), 1);
        assert_eq!(edit_distance("abcdef", "badcfe", 2), 3);
        assert_eq!(prefix_distance("johm", "johnson", 1), 1);
        assert_eq!(prefix_distance("jo", "johnson", 0), 0);
        assert_eq!(prefix_distance("xo", "johnson", 0), 1);
    }

    #[test]
    fn folding() {
        assert_eq!(fold("Müller"), "muller");
        assert_eq!(fold("Weiß"), "weiss");
        assert_eq!(fold("Søren Ørsted"), "soren orsted");
        assert_eq!(fold("Łukasz Wałęsa"), "lukasz walesa");
        assert_eq!(fold("Æbbe Œuvre"), "aebbe oeuvre");
        assert_eq!(fold("Đorđe"), "dorde");
        assert_eq!(fold("Işıl Çağrı"), "isil cagri");
        assert_eq!(fold("François Lefèvre"), "francois lefevre");
        assert_eq!(fold("Åsa Öberg"), "asa oberg");
        // a decomposed accent (e + combining acute) folds the same
        assert_eq!(fold("Jose\u{301}"), "jose");
        assert_eq!(fold("山田 太郎"), "山田 太郎");
    }

    #[test]
    fn german_transliteration() {
        assert_eq!(german_alternative("Müller").as_deref(), Some("mueller"));
        assert_eq!(german_alternative("Schröder").as_deref(), Some("schroeder"));
        assert_eq!(german_alternative("Smith"), None);
    }

    #[test]
    fn phones_match_any_format() {
        let t = phone_tokens("+46 8 123 456 78", "+46812345678");
        for want in ["46812345678", "812345678", "0812345678", "12345678", "5678"] {
            assert!(t.contains(&want.to_owned()), "{want} in {t:?}");
        }
        let us = phone_tokens("(415) 555-2671", "+14155552671");
        assert!(us.contains(&"4155552671".to_owned()) && us.contains(&"2671".to_owned()));
        // no country code known: digits and their tails only
        let bare = phone_tokens("08-12345678", "0812345678");
        assert!(bare.contains(&"12345678".to_owned()) && !bare.iter().any(|x| x.len() < 4));
    }

    #[test]
    fn email_local_parts() {
        assert_eq!(
            email_locals(["Anna.S@x.se", "anna.s@y.se", "b@z", "nope", "@x"].into_iter()),
            ["anna.s", "b"]
        );
    }

    #[test]
    fn email_parts() {
        assert_eq!(
            email_tokens("Anna.Maria_Svensson+crm@Example.se"),
            vec![
                "anna.maria_svensson+crm@example.se",
                "anna.maria_svensson+crm",
                "anna",
                "maria",
                "svensson",
                "crm",
                "example.se",
                "example",
                "se"
            ]
        );
    }
}
