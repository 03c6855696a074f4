//! Operator work: seeding synthetic data, importing files. Long work shows
//! progress (indicatif bars on a terminal, `tracing` lines otherwise).

pub mod import;
pub mod seed;
pub mod shards;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `total` units named `what` (hidden when stderr is not a
/// terminal, or `quiet`).
pub fn bar(total: u64, what: &str, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(total),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:32}}] {{human_pos}}/{{human_len}} {what} ({{per_sec}}, eta {{eta}}) {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}
