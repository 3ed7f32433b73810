//! `snapport`: stream disks and snapshots out of storage backends as image files.
//!
//! Thin by design: each command parses its options into a request, calls its operation in
//! the engine (`snapport-engine`), and renders the report as text or JSON
//! (`commands/`, `render.rs`). Errors print as one line on stderr with exit code 1; usage
//! errors (an address or size that does not parse, options that contradict) exit with 2.

mod commands;
mod interrupt;
mod render;

use std::path::PathBuf;

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
    Download(commands::download::Args),
    /// Download what `download --publish` serves: resumable, parallel, verified.
    Fetch(commands::fetch::Args),
    /// Send an image to `upload --publish`: resumable, verified by the server.
    Push(commands::push::Args),
    /// Import an image (file, stdin or URL; raw, qcow2 or zstd) as a new disk or image.
    Upload(commands::upload::Args),
    /// Create a disk or image from an image, a disk or a snapshot (full copy or thin).
    Create(commands::create::Args),
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
    Clone(commands::clone::Args),
    /// Delete the snapshots a retention policy does not keep (lists them without --apply).
    Prune(commands::prune::Args),
    /// List or inspect backend plugins.
    #[command(subcommand)]
    Plugin(commands::plugin::Command),
    /// Print a shell completion script: `snapport completion bash > /etc/bash_completion.d/snapport`.
    Completion {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (snapport.1, and snapport-COMMAND.1 for every command) into
    /// DIR; `cargo xtask man` runs it.
    #[command(hide = true)]
    Man {
        /// The folder to write them into (made if missing).
        dir: PathBuf,
    },
}

/// `snapport completion SHELL`: the script on stdout.
fn completion(shell: clap_complete::Shell) -> snapport_engine::Result<()> {
    use clap::CommandFactory;
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "snapport",
        &mut std::io::stdout(),
    );
    Ok(())
}

/// `snapport man DIR`: every page, written as roff.
fn man(dir: &std::path::Path) -> snapport_engine::Result<()> {
    use clap::CommandFactory;
    use snapport_engine::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))
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
        Command::Download(a) => commands::download::run(a),
        Command::Fetch(a) => commands::fetch::run(a),
        Command::Push(a) => commands::push::run(a),
        Command::Upload(a) => commands::upload::run(a),
        Command::Create(a) => commands::create::run(a),
        Command::Delete(a) => commands::delete::run(a),
        Command::Get(a) => commands::get::run(a),
        Command::Describe(a) => commands::describe::run(a),
        Command::Snapshot(c) => commands::snapshot::run(c),
        Command::Tree(a) => commands::tree::run(a),
        Command::Restore(a) => commands::restore::run(a),
        Command::Clone(a) => commands::clone::run(a),
        Command::Prune(a) => commands::prune::run(a),
        Command::Plugin(c) => commands::plugin::run(c),
        Command::Completion { shell } => completion(shell),
        Command::Man { dir } => man(&dir),
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
