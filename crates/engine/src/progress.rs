//! The terminal side of the engine's progress trait.

use indicatif::{ProgressBar, ProgressStyle};
use snapport_core::progress::Progress;

/// A bar on stderr (bytes, rate, ETA); indicatif hides it when stderr is not a terminal.
pub struct Bar(ProgressBar);

impl Bar {
    #[allow(clippy::new_without_default)] // TRANSITIONAL: the bar moves to the CLI
    pub fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("static template"),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn start(&mut self, total: u64) {
        // One bar may serve several passes (a digest map, then the import).
        self.0.reset();
        self.0.set_length(total);
    }
    fn advance(&mut self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&mut self) {
        self.0.finish_and_clear();
    }
    fn stage(&mut self, what: &str) {
        self.0.suspend(|| eprintln!("{what}"));
    }
}
