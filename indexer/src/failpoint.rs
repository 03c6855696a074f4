//! Fail points for the chaos tests: `CRMSEARCH_FAILPOINT=NAME:N:ACTION`
//! makes the `N`th pass through the point `NAME` abort the process
//! (`abort`, what a SIGKILL at that moment leaves behind), fail with an
//! error once (`error`, what a full disk or a bug would raise there), or
//! never return (`hang`, a stuck disk or a deadlock). Unset
//! (always, outside tests) a pass costs one load of a cached value.
//!
//! Points: `durable_commit`, `soft_commit`, `merge`, `snapshot` (each batch
//! of a snapshot), `swap_generation` (a reindex swapping in),
//! `vector_dump`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Abort,
    Error,
    Hang,
}

struct Point {
    name: String,
    nth: u64,
    action: Action,
    passes: AtomicU64,
}

fn point() -> Option<&'static Point> {
    static POINT: OnceLock<Option<Point>> = OnceLock::new();
    POINT
        .get_or_init(|| {
            let spec = std::env::var("CRMSEARCH_FAILPOINT").ok()?;
            let mut parts = spec.split(':');
            let name = parts.next()?.to_owned();
            let nth = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
            let action = match parts.next() {
                Some("error") => Action::Error,
                Some("hang") => Action::Hang,
                _ => Action::Abort,
            };
            Some(Point {
                name,
                nth,
                action,
                passes: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// A pass through the point `name`.
pub fn hit(name: &str) -> std::io::Result<()> {
    let Some(p) = point().filter(|p| p.name == name) else {
        return Ok(());
    };
    if p.passes.fetch_add(1, Ordering::AcqRel) + 1 != p.nth {
        return Ok(());
    }
    match p.action {
        Action::Abort => {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
        Action::Hang => loop {
            std::thread::park();
        },
        Action::Error => Err(std::io::Error::other(format!("failpoint {name}"))),
    }
}
