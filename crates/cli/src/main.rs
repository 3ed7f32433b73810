//! `snapport`: stream disks and snapshots out of storage backends as image files.
//!
//! Thin by design: each command parses its options and calls the engine (`snapport-core`)
//! through a plugin instance (`snapport-host`). Errors print as one line on stderr with
//! exit code 1; usage errors exit with 2.

mod commands;

use snapport_engine::commands as engine_commands;
use snapport_engine::interrupt;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "snapport",
    version,
    about = "Stream disks and snapshots out of storage backends as image files, and back in"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Export a disk (vd/NAME), an image (vi/NAME) or a disk snapshot (vds/DISK@SNAP) to
    /// a file or stdout.
    Download(engine_commands::download::Args),
    /// Download what `download --publish` serves: resumable, parallel, verified.
    Fetch(engine_commands::fetch::Args),
    /// Send an image to `upload --publish`: resumable, verified by the server.
    Push(engine_commands::push::Args),
    /// Import an image (file, stdin or URL; raw, qcow2 or zstd) as a new disk or image.
    Upload(engine_commands::upload::Args),
    /// Create a disk or image from an image, a disk or a snapshot (full copy or thin).
    Create(engine_commands::create::Args),
    /// Delete a disk, an image or a disk snapshot.
    Delete(commands::delete::Args),
    /// List disks (vd), images (vi) or disk snapshots (vds) of a pool.
    Get(commands::get::Args),
    /// Show one disk snapshot: phase, consistency, parent, comment.
    Describe(commands::describe::Args),
    /// Take snapshots.
    #[command(subcommand)]
    Snapshot(commands::snapshot::Command),
    /// A disk's snapshots, each under the one taken before it.
    Tree(commands::tree::Args),
    /// Make a disk's content a snapshot's again (dry-run by default).
    Restore(commands::restore::Args),
    /// A new VM from a VM or a VM snapshot: full copies of its disks, renamed, with new
    /// MAC addresses.
    Clone(engine_commands::clone::Args),
    /// Delete the snapshots a retention policy does not keep (lists them without --apply).
    Prune(commands::prune::Args),
    /// List or inspect backend plugins.
    #[command(subcommand)]
    Plugin(commands::plugin::Command),
}

/// A listing piped into `head` (or anything that stops reading) ends the command
/// quietly with the status a SIGPIPE death would give, as other Unix tools do, instead of
/// std's panic in `println!`. SIGPIPE itself stays ignored: a guest agent or a client that
/// hangs up must come back as an error, not kill snapport with a guest frozen.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() {
    let cli = Cli::parse();
    interrupt::install();
    quiet_on_closed_stdout();
    let result = match cli.command {
        Command::Download(a) => engine_commands::download::run(a),
        Command::Fetch(a) => engine_commands::fetch::run(a),
        Command::Push(a) => engine_commands::push::run(a),
        Command::Upload(a) => engine_commands::upload::run(a),
        Command::Create(a) => engine_commands::create::run(a),
        Command::Delete(a) => commands::delete::run(a),
        Command::Get(a) => commands::get::run(a),
        Command::Describe(a) => commands::describe::run(a),
        Command::Snapshot(c) => commands::snapshot::run(c),
        Command::Tree(a) => commands::tree::run(a),
        Command::Restore(a) => commands::restore::run(a),
        Command::Clone(a) => engine_commands::clone::run(a),
        Command::Prune(a) => commands::prune::run(a),
        Command::Plugin(c) => commands::plugin::run(c),
    };
    if let Err(e) = result {
        // Plugins, files and peers put words in errors: no control character of theirs
        // reaches the terminal, and the line stays a line.
        let line = snapport_host::printable(&e.one_line(), 16 << 10);
        eprintln!("snapport: error: {line}");
        std::process::exit(match e.kind() {
            snapport_engine::ErrorKind::Usage => 2,
            _ => 1,
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
