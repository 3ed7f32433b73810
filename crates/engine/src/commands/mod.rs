pub mod create;
pub mod delete;
pub mod describe;
pub mod get;
pub mod plugin;
pub mod prune;
pub mod restore;
pub mod snapshot;
pub mod tree;
pub mod upload;

use snapport_core::progress::{NoProgress, Progress};
use std::io::IsTerminal;

/// How a command prints its summary (`-o`).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputArg {
    Text,
    Json,
}

/// A progress bar on a terminal, nothing otherwise or with `-q`; stages and warnings
/// on stderr unless `-q`.
pub fn new_progress(quiet: bool) -> Box<dyn Progress> {
    Box::new(Transitional {
        quiet,
        bar: bar(quiet),
    })
}

fn bar(quiet: bool) -> Box<dyn Progress> {
    if quiet || !std::io::stderr().is_terminal() {
        Box::new(NoProgress)
    } else {
        Box::new(crate::progress::Bar::new())
    }
}

/// TRANSITIONAL (until every command renders its own progress in the CLI): prints the
/// stages the domain modules report, as they printed them, and draws a new bar for each
/// run of bytes.
struct Transitional {
    quiet: bool,
    bar: Box<dyn Progress>,
}

impl Progress for Transitional {
    fn start(&mut self, total: u64) {
        self.bar = bar(self.quiet);
        self.bar.start(total);
    }
    fn advance(&mut self, bytes: u64) {
        self.bar.advance(bytes);
    }
    fn finish(&mut self) {
        self.bar.finish();
    }
    fn stage(&mut self, what: &str) {
        if !self.quiet {
            eprintln!("{what}");
        }
    }
    fn warn(&mut self, text: &str) {
        if !self.quiet {
            eprintln!("warning: {text}");
        }
    }
}

/// Human-readable binary size ("1.5 GiB").
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
