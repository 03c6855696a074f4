//! One query word against one field: exact, by prefix, or within a few
//! edits, each match scored by its kind so exact beats prefix beats fuzzy.
//!
//! A single pass over the term dictionary (a Levenshtein automaton, a prefix
//! range, or plain lookups) classifies every matching term; the postings of
//! each kind go into one bitset, so a document scores the best kind it has.

use std::sync::Arc;

use schema::analysis::{edit_distance, prefix_distance};
use tantivy::query::{BitSetDocSet, DfaWrapper, EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{BitSet, DocId, DocSet, Score, SegmentReader, Term};

/// Scores of the kinds of match, relative to the field's weight.
pub mod kind {
    pub const EXACT: f32 = 1.0;
    pub const PREFIX: f32 = 0.75;
    pub const NICKNAME: f32 = 0.7;
    pub const FUZZY1: f32 = 0.5;
    pub const FUZZY2: f32 = 0.4;
    /// Multiplies a fuzzy score when the first letter differs.
    pub const FIRST_LETTER: f32 = 0.8;
}

/// How one word may match.
#[derive(Debug, Clone)]
pub struct WordMatch {
    /// The word as the index folds it.
    pub word: String,
    /// Other terms that match whole, with their kind score (a German
    /// transliteration, nicknames).
    pub alternatives: Vec<(String, f32)>,
    /// The word is being typed: terms starting with it match.
    pub prefix: bool,
    /// Edits allowed (0, 1 or 2).
    pub distance: u8,
}

impl WordMatch {
    /// The automaton of the fuzzy match, when there is one; built once and
    /// shared by every field the word is looked for in.
    pub fn automaton(&self) -> Option<Arc<Automaton>> {
        if self.distance == 0 {
            return None;
        }
        let term = Term::from_field_text(Field::from_field_id(0), &self.word);
        let query = if self.prefix {
            tantivy::query::FuzzyTermQuery::new_prefix(term, self.distance, true)
        } else {
            tantivy::query::FuzzyTermQuery::new(term, self.distance, true)
        };
        query.automaton().ok().map(|a| Arc::new(Automaton(a)))
    }

    /// The kind score of a term the word's automaton or prefix matched.
    fn classify(&self, term: &str, prefix: bool) -> Option<f32> {
        if term == self.word {
            return Some(kind::EXACT);
        }
        if prefix && term.starts_with(&self.word) {
            return Some(kind::PREFIX);
        }
        let max = u32::from(self.distance);
        let d = if prefix {
            prefix_distance(&self.word, term, max)
        } else {
            edit_distance(&self.word, term, max)
        };
        let score = match d {
            0 => kind::EXACT,
            1 => kind::FUZZY1,
            2 => kind::FUZZY2,
            _ => return None,
        };
        let same_first = term.chars().next() == self.word.chars().next();
        Some(if same_first {
            score
        } else {
            score * kind::FIRST_LETTER
        })
    }
}

/// A Levenshtein automaton (tantivy's, with transpositions).
pub struct Automaton(DfaWrapper);

impl std::fmt::Debug for Automaton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Automaton")
    }
}

/// The query of one word in one field, scored `weight × kind`.
#[derive(Debug, Clone)]
pub struct FieldMatch {
    pub field: Field,
    pub weight: f32,
    pub word: Arc<WordMatch>,
    /// Whether the field takes fuzzy matches at all.
    pub fuzzy: bool,
    /// Whether the field takes prefix matches.
    pub prefix: bool,
    /// Prefix matches only among terms without email punctuation after the
    /// prefix: a plain word in the email tokens matches the pieces of
    /// addresses (`anna` → `anna`, `annamaria`), not every whole address and
    /// local part starting with it (thousands of one-document terms; the
    /// pieces find the same contacts).
    pub pieces: bool,
    pub automaton: Option<Arc<Automaton>>,
}

/// Every term of a prefix stream: the word itself exact, the others prefix.
fn each_prefixed<A: tantivy_fst::Automaton>(
    mut stream: tantivy::termdict::TermStreamer<'_, A>,
    word: &[u8],
    add: &mut impl FnMut(&tantivy::postings::TermInfo, f32) -> tantivy::Result<()>,
) -> tantivy::Result<()> {
    while stream.advance() {
        let score = if stream.key() == word {
            kind::EXACT
        } else {
            kind::PREFIX
        };
        add(stream.value(), score)?;
    }
    Ok(())
}

/// Terms starting with a prefix and holding none of `@ . _ - +` after it.
struct PiecePrefix<'a>(&'a [u8]);

impl tantivy_fst::Automaton for PiecePrefix<'_> {
    /// Bytes of the prefix matched so far; `None`: no match below.
    type State = Option<usize>;

    fn start(&self) -> Option<usize> {
        Some(0)
    }

    fn is_match(&self, state: &Option<usize>) -> bool {
        *state == Some(self.0.len())
    }

    fn can_match(&self, state: &Option<usize>) -> bool {
        state.is_some()
    }

    fn accept(&self, state: &Option<usize>, byte: u8) -> Option<usize> {
        let i = (*state)?;
        if i < self.0.len() {
            (self.0[i] == byte).then_some(i + 1)
        } else {
            (!b"@._-+".contains(&byte)).then_some(i)
        }
    }
}

impl Query for FieldMatch {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for FieldMatch {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let inverted = reader.inverted_index(self.field)?;
        let dict = inverted.terms();
        let mut levels = Levels::new(reader.max_doc());
        let mut add = |info: &tantivy::postings::TermInfo, score: f32| -> tantivy::Result<()> {
            let mut postings =
                inverted.read_block_postings_from_terminfo(info, IndexRecordOption::Basic)?;
            let (set, any) = levels.level(score);
            loop {
                let docs = postings.docs();
                if docs.is_empty() {
                    break;
                }
                for &doc in docs {
                    set.insert(doc);
                    any.insert(doc);
                }
                postings.advance();
            }
            Ok(())
        };
        let w = &self.word;
        let prefix = w.prefix && self.prefix;
        match (&self.automaton, self.fuzzy) {
            (Some(automaton), true) => {
                let mut stream = dict.search(&automaton.0).into_stream()?;
                while stream.advance() {
                    let term = std::str::from_utf8(stream.key()).unwrap_or_default();
                    // a prefix automaton in a field without prefixes: classify
                    // as a whole word, which drops what only a prefix matched
                    if let Some(score) = w.classify(term, prefix) {
                        add(stream.value(), score)?;
                    }
                }
            }
            (Some(_), false) | (None, _) if prefix && self.pieces => {
                let stream = dict.search(PiecePrefix(w.word.as_bytes())).into_stream()?;
                each_prefixed(stream, w.word.as_bytes(), &mut add)?;
            }
            (Some(_), false) | (None, _) if prefix => {
                let mut range = dict.range().ge(w.word.as_bytes());
                if let Some(end) = prefix_end(w.word.as_bytes()) {
                    range = range.lt(end);
                }
                each_prefixed(range.into_stream()?, w.word.as_bytes(), &mut add)?;
            }
            (Some(_), false) | (None, _) => {
                if let Some(info) = dict.get(w.word.as_bytes())? {
                    add(&info, kind::EXACT)?;
                }
            }
        }
        for (alt, score) in &w.alternatives {
            if let Some(info) = dict.get(alt.as_bytes())? {
                add(&info, *score)?;
            }
        }
        Ok(Box::new(levels.scorer(self.weight * boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} does not match"
            )));
        }
        Ok(Explanation::new("FieldMatch", scorer.score()))
    }
}

/// The smallest byte string greater than every string starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Documents by the best kind of match they have.
struct Levels {
    max_doc: u32,
    /// (score, docs), built on first use of each score.
    sets: Vec<(f32, BitSet)>,
    any: BitSet,
}

impl Levels {
    fn new(max_doc: u32) -> Self {
        Self {
            max_doc,
            sets: Vec::new(),
            any: BitSet::with_max_value(max_doc),
        }
    }

    /// The documents of a score, and of any score.
    fn level(&mut self, score: f32) -> (&mut BitSet, &mut BitSet) {
        let i = match self.sets.iter().position(|(s, _)| *s == score) {
            Some(i) => i,
            None => {
                self.sets
                    .push((score, BitSet::with_max_value(self.max_doc)));
                self.sets.len() - 1
            }
        };
        (&mut self.sets[i].1, &mut self.any)
    }

    fn scorer(mut self, weight: f32) -> LevelScorer {
        self.sets.sort_by(|a, b| b.0.total_cmp(&a.0));
        LevelScorer {
            any: BitSetDocSet::from(self.any),
            levels: self.sets,
            weight,
        }
    }
}

struct LevelScorer {
    any: BitSetDocSet,
    levels: Vec<(f32, BitSet)>,
    weight: f32,
}

impl DocSet for LevelScorer {
    fn advance(&mut self) -> DocId {
        self.any.advance()
    }
    fn seek(&mut self, target: DocId) -> DocId {
        self.any.seek(target)
    }
    fn doc(&self) -> DocId {
        self.any.doc()
    }
    fn size_hint(&self) -> u32 {
        self.any.size_hint()
    }
}

impl Scorer for LevelScorer {
    fn score(&mut self) -> Score {
        let doc = self.any.doc();
        self.levels
            .iter()
            .find(|(_, set)| set.contains(doc))
            .map_or(0.0, |(score, _)| score * self.weight)
    }
}
