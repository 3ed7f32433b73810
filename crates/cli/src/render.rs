//! What every command shares in how it speaks: the report flags (`-o text|json`, `-q`),
//! one JSON document on stdout, sizes for people, the progress bar and stage lines on
//! stderr, and plugin log lines.

use indicatif::{ProgressBar, ProgressStyle};
use snapport_core::progress::Progress;
use snapport_host::Logger;
use std::io::IsTerminal;
use std::sync::Arc;

/// How a command prints its report.
#[derive(Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Lines for people (`table` is the same).
    #[default]
    #[value(alias = "table")]
    Text,
    /// One JSON document on stdout, the engine's report as it is.
    Json,
}

/// The report flags of a command whose `-o` is free.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Print the report as text or as one JSON document on stdout.
    #[arg(short = 'o', long = "output", visible_alias = "output-format", value_enum,
          default_value_t = Format::Text)]
    pub output: Format,
    /// The same as `-o json`.
    #[arg(long, hide = true)]
    pub json: bool,
    /// Print nothing on success: no progress, no text report (JSON still prints).
    #[arg(short, long)]
    pub quiet: bool,
}

impl ReportArgs {
    /// Whether the report goes out as JSON.
    pub fn json(&self) -> bool {
        self.json || self.output == Format::Json
    }

    /// Whether a text report is printed (neither JSON nor quiet).
    pub fn text(&self) -> bool {
        !self.json() && !self.quiet
    }
}

/// The report flags of a command whose `-o` names the output file (download, fetch).
#[derive(clap::Args)]
pub struct FileReportArgs {
    /// Print the report as text or as one JSON document (on stdout; on stderr when the
    /// image itself goes to stdout).
    #[arg(long = "output-format", value_enum, default_value_t = Format::Text)]
    pub output_format: Format,
    /// The same as `--output-format json`.
    #[arg(long, hide = true)]
    pub json: bool,
    /// Print nothing on success: no progress, no text report (JSON still prints).
    #[arg(short, long)]
    pub quiet: bool,
}

impl FileReportArgs {
    /// Whether the report goes out as JSON.
    pub fn json(&self) -> bool {
        self.json || self.output_format == Format::Json
    }
}

/// Prints `report` as one JSON document (keys sorted) on stdout, or on stderr when stdout
/// carries the data itself (`download -o -`).
pub fn print_json(report: &impl serde::Serialize, on_stderr: bool) {
    let doc = serde_json::to_value(report).expect("reports serialize");
    if on_stderr {
        eprintln!("{doc}");
    } else {
        println!("{doc}");
    }
}

/// Prints `report` as one indented JSON document (keys sorted) on stdout.
pub fn print_json_pretty(report: &impl serde::Serialize) {
    let doc = serde_json::to_value(report).expect("reports serialize");
    println!("{doc:#}");
}

/// `-` for none.
pub fn or_dash(s: Option<impl ToString>) -> String {
    s.map_or_else(|| "-".into(), |s| s.to_string())
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

/// The engine's progress on a terminal: a bar on stderr when stderr is a terminal (bytes,
/// rate, ETA; a fresh one for each `start`), stage lines on stderr unless quiet, warnings
/// always.
pub struct Bar {
    draw: bool,
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Bar {
    /// Progress for a command run with `-q` or not.
    pub fn new(quiet: bool) -> Bar {
        Bar {
            draw: !quiet && std::io::stderr().is_terminal(),
            bar: None,
            quiet,
        }
    }

    /// Stage lines and warnings, never a bar (for a report that goes out as JSON, or an
    /// operation whose bytes are not worth a bar).
    pub fn lines(quiet: bool) -> Bar {
        Bar {
            draw: false,
            bar: None,
            quiet,
        }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Progress for Bar {
    fn start(&mut self, total: u64) {
        if !self.draw {
            return;
        }
        let bar =
            ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("static template"),
        );
        self.bar = Some(bar);
    }
    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
    fn stage(&mut self, what: &str) {
        if !self.quiet {
            self.say(what);
        }
    }
    fn warn(&mut self, text: &str) {
        self.say(&format!("warning: {text}"));
    }
}

/// Plugin log lines (and the host's own about loading them) go to stderr, warnings and
/// errors only unless SNAPPORT_LOG=debug.
pub fn stderr_logger() -> Logger {
    use snapport_host::bindings::snapport::backend::types::LogLevel;
    let verbose = std::env::var("SNAPPORT_LOG").is_ok_and(|v| v == "debug" || v == "info");
    Arc::new(move |plugin, level, msg| {
        let tag = match level {
            LogLevel::Error => "error",
            LogLevel::Warn => "warning",
            LogLevel::Info if verbose => "info",
            LogLevel::Debug if verbose => "debug",
            _ => return,
        };
        eprintln!("snapport: plugin {plugin}: {tag}: {msg}");
    })
}

/// The engine every command runs with: the configuration, and plugin log lines on
/// stderr.
pub fn engine() -> snapport_engine::Result<snapport_engine::Engine> {
    snapport_engine::Engine::new(Some(stderr_logger()))
}
