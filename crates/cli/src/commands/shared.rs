// SHARED: the report flags, JSON printing, sizes and the progress bar of H-snapshots'
// commands, for the lead to hoist into render.rs.

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use snapport_core::progress::Progress;
use snapport_engine::{Engine, Result};
use std::io::IsTerminal;

/// `-o text|json` (`--output-format`, hidden `--json`) and `-q`.
#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// Output: text or json.
    #[arg(short = 'o', long = "output", visible_alias = "output-format", value_enum, default_value_t = Format::Text)]
    output: Format,
    #[arg(long, hide = true)]
    json: bool,
    /// Print nothing on success (JSON, when asked for, still prints).
    #[arg(short, long)]
    pub quiet: bool,
}

/// How a command reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Format {
    #[value(alias = "table")]
    Text,
    Json,
}

impl OutputArgs {
    /// JSON asked for.
    pub fn json(&self) -> bool {
        self.json || self.output == Format::Json
    }
    /// A text summary wanted (not JSON, not quiet).
    pub fn text(&self) -> bool {
        !self.json() && !self.quiet
    }
}

/// One JSON document on stdout, as `serde_json::Value` prints it (keys sorted).
pub fn print_json(report: &impl Serialize, pretty: bool) -> Result<()> {
    let v = serde_json::to_value(report)?;
    let text = if pretty {
        serde_json::to_string_pretty(&v)?
    } else {
        v.to_string()
    };
    println!("{text}");
    Ok(())
}

/// The engine, with plugins' log lines on stderr.
pub fn engine() -> Result<Engine> {
    Engine::new(Some(snapport_engine::engine::stderr_logger()))
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

/// `-` for none.
pub fn or_dash(s: Option<impl ToString>) -> String {
    s.map_or_else(|| "-".into(), |s| s.to_string())
}

/// A bar on stderr when it is a terminal (bytes, rate, ETA; a fresh one for each
/// `start`), stage lines on stderr; with `quiet`, nothing but warnings.
pub struct Bar {
    draw: bool,
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Bar {
    /// `bar`: draw a bar (when stderr is a terminal); `quiet`: no stage lines either.
    pub fn new(bar: bool, quiet: bool) -> Bar {
        let draw = bar && !quiet && std::io::stderr().is_terminal();
        Bar {
            draw,
            bar: None,
            quiet,
        }
    }
}

impl Progress for Bar {
    fn start(&mut self, total: u64) {
        if !self.draw {
            return;
        }
        let b = ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("static template"),
        );
        self.bar = Some(b);
    }
    fn advance(&mut self, bytes: u64) {
        self.bar.iter().for_each(|b| b.inc(bytes));
    }
    fn finish(&mut self) {
        self.bar
            .take()
            .iter()
            .for_each(ProgressBar::finish_and_clear);
    }
    fn stage(&mut self, what: &str) {
        if !self.quiet {
            eprintln!("{what}");
        }
    }
    fn warn(&mut self, text: &str) {
        eprintln!("warning: {text}");
    }
}
