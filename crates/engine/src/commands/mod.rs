pub mod clone;
pub mod create;
pub mod download;
pub mod fetch;
pub mod publish;
pub mod push;
pub mod upload;

use snapport_core::progress::{NoProgress, Progress};
use std::io::IsTerminal;

/// How a command prints its summary (`-o`).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputArg {
    Text,
    Json,
}

/// A progress bar on a terminal, nothing otherwise or with `-q`.
pub fn new_progress(quiet: bool) -> Box<dyn Progress> {
    if quiet || !std::io::stderr().is_terminal() {
        Box::new(NoProgress)
    } else {
        Box::new(crate::progress::Bar::new())
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
