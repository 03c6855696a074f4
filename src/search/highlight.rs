//! Highlights: the spans of a record's fields the query matched, wrapped in
//! `<em>`, everything HTML-escaped. Computed from the stored record with
//! the same folding and distances as the query, so fuzzy and prefix matches
//! are highlighted too (tantivy's snippet generator sees neither).

use schema::analysis::{self, edit_distance, prefix_distance};
use serde_json::{Map, Value};

use super::query::Matchers;

/// Characters of context on each side of a match in long text.
const SNIPPET_CONTEXT: usize = 60;

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `text` with the byte spans marked (sorted, not overlapping).
fn mark(text: &str, spans: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len() + spans.len() * 9);
    let mut at = 0;
    for &(from, to) in spans {
        escape_into(&mut out, &text[at..from]);
        out.push_str("<em>");
        escape_into(&mut out, &text[from..to]);
        out.push_str("</em>");
        at = to;
    }
    escape_into(&mut out, &text[at..]);
    out
}

/// The byte end of the first `n` folded bytes of `word` (a prefix match),
/// folded plainly or with the German transliteration.
fn prefix_end(word: &str, n: usize, german: bool) -> usize {
    let mut folded = 0;
    for (i, c) in word.char_indices() {
        if folded >= n {
            return i;
        }
        let c = c.encode_utf8(&mut [0; 4]).to_owned();
        folded += match german.then(|| analysis::german_alternative(&c)).flatten() {
            Some(alt) => alt.len(),
            None => analysis::fold(&c).len(),
        };
    }
    word.len()
}

/// How much of a word (folded `token`, original `original`) the query
/// matched: the whole word, a prefix of it, or nothing.
fn word_span(m: &Matchers, token: &str, original: &str) -> Option<usize> {
    let mut best: Option<usize> = None;
    let alt = analysis::german_alternative(original);
    let alt = alt.as_deref().unwrap_or(token);
    for w in &m.words {
        let d = u32::from(w.distance);
        let whole = |t: &str| t == w.word || w.alternatives.iter().any(|(a, _)| a == t);
        let end = if whole(token) || whole(alt) {
            Some(original.len())
        } else if w.prefix && token.starts_with(&w.word) {
            Some(prefix_end(original, w.word.len(), false))
        } else if w.prefix && alt.starts_with(&w.word) {
            Some(prefix_end(original, w.word.len(), true))
        } else if d > 0 && edit_distance(&w.word, token, d) <= d {
            Some(original.len())
        } else if d > 0 && w.prefix && prefix_distance(&w.word, token, d) <= d {
            let n = w.word.chars().count();
            Some(
                original
                    .char_indices()
                    .nth(n)
                    .map_or(original.len(), |(i, _)| i),
            )
        } else {
            None
        };
        best = best.max(end);
    }
    for (digits, _) in &m.digits {
        if token == digits {
            best = Some(original.len());
        }
    }
    best
}

/// The matched spans of a name-like text.
fn text_spans(m: &Matchers, text: &str) -> Vec<(usize, usize)> {
    analysis::words(text)
        .into_iter()
        .filter_map(|w| {
            word_span(m, &w.folded, &text[w.from..w.to]).map(|len| (w.from, w.from + len))
        })
        .collect()
}

fn text(m: &Matchers, value: &str) -> Option<String> {
    let spans = text_spans(m, value);
    (!spans.is_empty()).then(|| mark(value, &spans))
}

/// A window of long text around its first match, marked.
fn snippet(m: &Matchers, value: &str) -> Option<String> {
    let spans = text_spans(m, value);
    let (first, _) = *spans.first()?;
    let start = value[..first]
        .char_indices()
        .rev()
        .nth(SNIPPET_CONTEXT)
        .map_or(0, |(i, _)| i);
    let end = value[first..]
        .char_indices()
        .nth(SNIPPET_CONTEXT * 2)
        .map_or(value.len(), |(i, _)| first + i);
    let inside: Vec<(usize, usize)> = spans
        .iter()
        .filter(|(f, t)| *f >= start && *t <= end)
        .map(|(f, t)| (f - start, t - start))
        .collect();
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.push_str(&mark(&value[start..end], &inside));
    if end < value.len() {
        out.push('…');
    }
    Some(out)
}

fn email(m: &Matchers, value: &str) -> Option<String> {
    let lower = value.to_lowercase();
    for w in &m.words {
        if lower == w.word || (w.prefix && lower.starts_with(&w.word) && lower.len() == value.len())
        {
            let end = if lower == w.word {
                value.len()
            } else {
                w.word.len()
            };
            return Some(mark(value, &[(0, end)]));
        }
    }
    text(m, value)
}

fn phone(m: &Matchers, value: &str) -> Option<String> {
    let digits: Vec<(usize, char)> = value
        .char_indices()
        .filter(|(_, c)| c.is_ascii_digit())
        .collect();
    let all: String = digits.iter().map(|(_, c)| *c).collect();
    for (d, _) in &m.digits {
        let candidates = [d.as_str(), d.strip_prefix('0').unwrap_or(d)];
        for cand in candidates {
            if cand.len() < 3 {
                continue;
            }
            // the latest occurrence: a trailing run before a leading one
            if let Some(at) = all.rfind(cand) {
                let from = digits[at].0;
                let to = digits[at + cand.len() - 1].0 + 1;
                return Some(mark(value, &[(from, to)]));
            }
        }
    }
    None
}

/// Marks one value of a field, when the query matched it.
type Marker = fn(&Matchers, &str) -> Option<String>;

/// The highlights of a contact or company record (`_source`), by field.
pub fn record(m: &Matchers, source: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(obj) = source.as_object() else {
        return out;
    };
    for field in [
        "first_name",
        "last_name",
        "name",
        "title",
        "company_name",
        "city",
    ] {
        if let Some(h) = obj
            .get(field)
            .and_then(Value::as_str)
            .and_then(|v| text(m, v))
        {
            out.insert(field.to_owned(), Value::String(h));
        }
    }
    if let Some(h) = obj
        .get("notes")
        .and_then(Value::as_str)
        .and_then(|v| snippet(m, v))
    {
        out.insert("notes".to_owned(), Value::String(h));
    }
    let lists: [(&str, Marker); 4] = [
        ("emails", email),
        ("phones", phone),
        ("tags", text),
        ("domain", email),
    ];
    for (field, f) in lists {
        let values: Vec<Value> = match obj.get(field) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|v| f(m, v))
                .map(Value::String)
                .collect(),
            Some(Value::String(v)) => f(m, v).map(Value::String).into_iter().collect(),
            _ => Vec::new(),
        };
        if !values.is_empty() {
            let v = match obj.get(field) {
                Some(Value::String(_)) => values.into_iter().next().unwrap_or(Value::Null),
                _ => Value::Array(values),
            };
            out.insert(field.to_owned(), v);
        }
    }
    out
}

/// A suggestion's text, marked.
pub fn line(m: &Matchers, value: &str) -> String {
    let spans = text_spans(m, value);
    mark(value, &spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::query::{Scope, Typos, build, parse};
    use schema::index::IndexSchema;

    fn matchers(q: &str) -> Matchers {
        build(
            &parse(q),
            Scope::Contacts,
            &IndexSchema::new().fields,
            Typos::Normal,
            &[],
        )
        .1
    }

    #[test]
    fn marks_exact_prefix_fuzzy_and_escapes() {
        assert_eq!(
            text(&matchers("jon"), "Jon <b>"),
            Some("<em>Jon</em> &lt;b&gt;".into())
        );
        assert_eq!(line(&matchers("jo"), "John Smith"), "<em>Jo</em>hn Smith");
        assert_eq!(
            line(&matchers("smiht "), "John Smith"),
            "John <em>Smith</em>"
        );
        assert_eq!(line(&matchers("muell"), "Müller AG"), "<em>Müll</em>er AG");
        assert_eq!(
            line(&matchers("mueller "), "Müller AG"),
            "<em>Müller</em> AG"
        );
        assert_eq!(
            line(&matchers("bob "), "Robert Brown"),
            "<em>Robert</em> Brown"
        );
        assert_eq!(
            phone(&matchers("5678"), "+46 8 123 456 78"),
            Some("+46 8 123 4<em>56 78</em>".into())
        );
        assert_eq!(
            phone(&matchers("08-12345678"), "+46 8 123 456 78"),
            Some("+46 <em>8 123 456 78</em>".into())
        );
        assert_eq!(
            email(&matchers("anna.s@ex"), "Anna.S@example.se"),
            Some("<em>Anna.S@ex</em>ample.se".into())
        );
        assert!(
            snippet(
                &matchers("renewal "),
                &format!("{} renewal {}", "x".repeat(200), "y".repeat(200))
            )
            .is_some_and(|s| s.starts_with('…')
                && s.ends_with('…')
                && s.contains("<em>renewal</em>"))
        );
    }
}
