//! Given names and their nicknames, for matching "Bob" to Robert and back.
//!
//! The table (`data/nicknames.csv`, 2,691 pairs) is the hand-curated list by
//! Carlton Northern and Nick Crews, Apache License 2.0 (see `data/NOTICE.md`).

use std::collections::HashMap;
use std::sync::OnceLock;

static TABLE: &str = include_str!("../data/nicknames.csv");

/// Most alternatives returned for one name.
const MAX_RELATED: usize = 16;

fn table() -> &'static HashMap<&'static str, Vec<&'static str>> {
    static MAP: OnceLock<HashMap<&'static str, Vec<&'static str>>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        for line in TABLE.lines().skip(1) {
            let mut parts = line.trim_end().split(',');
            let (Some(name), Some("has_nickname"), Some(nick)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            for (a, b) in [(name, nick), (nick, name)] {
                let related = map.entry(a).or_default();
                if !related.contains(&b) {
                    related.push(b);
                }
            }
        }
        map
    })
}

/// The names related to a folded, lowercase `name` as its nicknames or the
/// names it is a nickname of (in the table's order, at most 16).
pub fn related(name: &str) -> &'static [&'static str] {
    table()
        .get(name)
        .map_or(&[], |v| &v[..v.len().min(MAX_RELATED)])
}

/// Number of name–nickname pairs in the table.
pub fn pairs() -> usize {
    TABLE.lines().skip(1).filter(|l| !l.is_empty()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions() {
        assert!(pairs() >= 100);
        for (nick, name) in [
            ("bob", "robert"),
            ("bill", "william"),
            ("liz", "elizabeth"),
            ("kate", "katherine"),
            ("jim", "james"),
        ] {
            assert!(related(nick).contains(&name), "{nick} → {name}");
            assert!(related(name).contains(&nick), "{name} → {nick}");
        }
        assert!(related("zzz").is_empty());
    }
}
