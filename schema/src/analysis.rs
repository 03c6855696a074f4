//! Text normalisation for contact search: the pure functions the search
//! issue's tokenizers are built from (not wired into the index yet).
//!
//! - [`fold`]: lowercase, NFKD with marks stripped, and the letters NFKD
//!   leaves alone (ß→ss, ø→o, ł→l, æ→ae, œ→oe, đ→d, ı→i, þ→th).
//! - [`german_alternative`]: the transliteration ü→ue, ö→oe, ä→ae, so
//!   "Mueller", "Muller" and "Müller" can all find Müller.
//! - [`phone_tokens`]: a number's digits, its national part, and every
//!   trailing run of 4+ digits.
//! - [`email_tokens`]: the address, its local part, the local part's pieces
//!   split on `. _ - +`, and the domain.

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
/// the domain. Lowercased.
pub fn email_tokens(email: &str) -> Vec<String> {
    let email = email.trim().to_lowercase();
    let mut out = vec![email.clone()];
    let mut push = |t: &str| {
        if !t.is_empty() && !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    };
    if let Some((local, domain)) = email.rsplit_once('@') {
        push(local);
        for piece in local.split(['.', '_', '-', '+']) {
            push(piece);
        }
        push(domain);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
                "example.se"
            ]
        );
    }
}
