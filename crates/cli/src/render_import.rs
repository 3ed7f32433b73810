//! SHARED (H-import): what the upload, create and clone commands share with every
//! command — hoist into render.rs (`OutputArgs`, `print_json`, `human`, `Bar`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use snapport_core::progress::Progress;
use snapport_engine::Result;
use std::io::IsTerminal;

/// Summary format.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `-o, --output text|json` (also `--output-format`, and a hidden `--json`).
#[derive(clap::Args)]
pub struct OutputArgs {
    /// Summary format.
    #[arg(short = 'o', long = "output", alias = "output-format", value_enum, default_value_t = Format::Text)]
    output: Format,
    /// Same as --output json.
    #[arg(long, hide = true)]
    json: bool,
}

impl OutputArgs {
    /// Whether the summary is JSON.
    pub fn json(&self) -> bool {
        self.json || self.output == Format::Json
    }
}

/// One JSON document on stdout, its keys sorted at every level (as `json!` has them).
pub fn print_json(report: &impl Serialize, pretty: bool) -> Result<()> {
    let value = serde_json::to_value(report)?;
    if pretty {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{value}");
    }
    Ok(())
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

/// The engine's progress on the terminal: a bar on stderr for each run of bytes (when
/// stderr is a terminal), stage and warning lines on stderr; nothing at all with `-q`.
pub struct Bar {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl Bar {
    /// Quiet: nothing is drawn or printed.
    pub fn new(quiet: bool) -> Bar {
        Bar { quiet, bar: None }
    }
}

impl Progress for Bar {
    fn start(&mut self, total: u64) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("static template"),
        );
        self.bar = Some(bar);
    }
    fn advance(&mut self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
    fn stage(&mut self, what: &str) {
        if !self.quiet {
            self.finish();
            eprintln!("{what}");
        }
    }
    fn warn(&mut self, text: &str) {
        if !self.quiet {
            eprintln!("warning: {text}");
        }
    }
}

/// The engine, its plugins' log lines on stderr.
pub fn engine() -> Result<snapport_engine::Engine> {
    snapport_engine::Engine::new(Some(snapport_engine::engine::stderr_logger()))
}
