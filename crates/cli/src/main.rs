//! `snapport`: stream disks and snapshots out of storage backends as image files.
//!
//! Thin by design: each command parses its options and calls the engine (`snapport-core`)
//! through a plugin instance (`snapport-host`). Errors print as one line on stderr with
//! exit code 1; usage errors exit with 2.

mod address;
mod commands;
mod config;
mod context;
mod interrupt;
mod progress;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "snapport",
    version,
    about = "Stream disks and snapshots out of storage backends as image files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Export a disk (vd/NAME) or a disk snapshot (vds/DISK@SNAP) to a file or stdout.
    Download(commands::download::Args),
    /// List disks (vd) or disk snapshots (vds) of a pool.
    Get(commands::get::Args),
    /// List or inspect backend plugins.
    #[command(subcommand)]
    Plugin(commands::plugin::Command),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Download(a) => commands::download::run(a),
        Command::Get(a) => commands::get::run(a),
        Command::Plugin(c) => commands::plugin::run(c),
    };
    if let Err(e) = result {
        // One line: what failed and, from the innermost cause, why.
        let mut line = e.to_string();
        for cause in e.chain().skip(1) {
            line.push_str(": ");
            line.push_str(&cause.to_string());
        }
        // Parsers (TOML) may explain over several lines: keep it to one.
        let line = line
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("snapport: error: {line}");
        std::process::exit(1);
    }
}
