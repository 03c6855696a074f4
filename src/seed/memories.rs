//! Deterministic agent memories about contacts: several kinds, importance,
//! timestamps over two years, phrasing varied from templates.

use rand::Rng;
use schema::MemoryKind;

use super::{pick, rng_for};

const STREAM_MEMORIES: u64 = 5;

/// What a memory is about: the contact's id (its `subject_id`), its first
/// name and its company.
#[derive(Debug, Clone)]
pub struct Subject {
    pub id: String,
    pub first_name: String,
    pub company: Option<String>,
}

/// A generated memory (written through the write path, which embeds it).
#[derive(Debug, Clone, PartialEq)]
pub struct SeedMemory {
    pub agent_id: &'static str,
    pub subject_id: String,
    pub kind: MemoryKind,
    pub content: String,
    pub importance: f32,
    /// Days before now it was written (0–730).
    pub age_days: f64,
}

pub const AGENTS: &[&str] = &["sales-bot", "support-bot", "success-bot"];

const PREFERENCES: &[&str] = &[
    "{n} prefers email over phone calls.",
    "{n} would rather talk on the phone than write long emails.",
    "{n} asked us not to call before 10am.",
    "{n} likes short one-page summaries instead of slide decks.",
    "{n} wants invoices sent to the finance team, not to them.",
    "{n} prefers video calls on Tuesdays or Thursdays.",
    "{n} dislikes cold outreach and wants warm introductions.",
    "{n} reads messages on weekends but answers on Monday.",
    "Best to reach {n} through {c}'s shared inbox.",
    "{n} prefers meetings in person at the {c} office.",
];
const FACTS: &[&str] = &[
    "{n} is the budget holder for {c}'s software purchases.",
    "{c} renews its contracts every June.",
    "{n} reports to the CFO and signs off on deals under 50k.",
    "{c} uses a competitor for analytics today.",
    "{n} moved to {c} from a consulting firm two years ago.",
    "{c} has around {k} employees across three offices.",
    "{n} speaks German, English and some French.",
    "{c}'s fiscal year ends in March.",
    "{n} has two children and coaches youth football.",
    "{c} needs data to stay in the EU for compliance.",
];
const EPISODES: &[&str] = &[
    "Met {n} at the trade fair; the demo went well.",
    "Call with {n}: they raised concerns about onboarding time.",
    "{n} asked for a discount on the annual plan during the review.",
    "Lunch with {n} in town; talked about {c}'s expansion plans.",
    "{n} complained that support took three days to answer.",
    "Sent {n} the security questionnaire; waiting for their IT team.",
    "{n} introduced us to a colleague in procurement at {c}.",
    "Quarterly review with {n}: usage is up {k} percent.",
    "{n} missed the scheduled call and asked to move it to next week.",
    "Webinar follow-up: {n} asked about the API rate limits.",
];
const SUMMARIES: &[&str] = &[
    "Summary: {n} is positive about a pilot at {c} but needs budget approval.",
    "Summary: {c} is a happy customer; {n} may expand to {k} more seats.",
    "Summary: {n} is evaluating three vendors; price is the main concern.",
    "Summary: relationship with {n} cooled after the support incident.",
    "Summary: {n} champions us inside {c}; next step is a call with legal.",
];

/// `n` memories spread over `subjects` (a contact often has several), the
/// same for the same seed.
pub fn memories(seed: u64, subjects: &[Subject], n: usize) -> Vec<SeedMemory> {
    let mut rng = rng_for(seed, STREAM_MEMORIES);
    if subjects.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|_| {
            let s = &subjects[rng.random_range(0..subjects.len())];
            let (kind, templates, base) = match rng.random_range(0..10) {
                0..=2 => (MemoryKind::Preference, PREFERENCES, 0.6),
                3..=5 => (MemoryKind::Fact, FACTS, 0.5),
                6..=8 => (MemoryKind::Episode, EPISODES, 0.3),
                _ => (MemoryKind::Summary, SUMMARIES, 0.7),
            };
            let company = s.company.as_deref().unwrap_or("their company");
            let content = pick(&mut rng, templates)
                .replace("{n}", &s.first_name)
                .replace("{c}", company)
                .replace("{k}", &rng.random_range(5..400).to_string());
            let importance = (base + rng.random_range(-0.2f32..0.3)).clamp(0.0, 1.0);
            SeedMemory {
                agent_id: pick(&mut rng, AGENTS),
                subject_id: s.id.clone(),
                kind,
                content,
                importance: (importance * 100.0).round() / 100.0,
                age_days: rng.random_range(0.0..730.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_memories() {
        let subjects: Vec<Subject> = (0..50)
            .map(|i| Subject {
                id: format!("c{i}"),
                first_name: format!("Name{i}"),
                company: (i % 2 == 0).then(|| format!("Co{i}")),
            })
            .collect();
        let a = memories(1, &subjects, 300);
        assert_eq!(a, memories(1, &subjects, 300));
        assert_ne!(a, memories(2, &subjects, 300));
        let kinds: std::collections::BTreeSet<&str> = a.iter().map(|m| m.kind.as_str()).collect();
        assert_eq!(kinds.len(), 4);
        assert!(
            a.iter()
                .all(|m| (0.0..=1.0).contains(&m.importance) && m.age_days < 730.0)
        );
        assert!(a.iter().all(|m| !m.content.contains('{')));
    }
}
