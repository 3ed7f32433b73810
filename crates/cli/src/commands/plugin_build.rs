//! `snapport plugin new` and `snapport plugin build`: a plugin author's project, made
//! from the template and built into a component, by the library the project's own build
//! uses (`snapport-plugin-build`). No pool or engine is involved.

use snapport_engine::{Error, Result};
use snapport_plugin_build::{self as build, Language, Project};
use std::path::PathBuf;

/// A plugin's source language, as `--lang` takes it.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    Rust,
    C,
}

/// `plugin new`'s arguments.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The plugin's name: the crate's (or C project's) name and the component's file
    /// name. ASCII letters, digits, '-' and '_', starting with a letter.
    pub name: String,
    /// The language of the template.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// The folder to write the project into (default ./NAME); must be new or empty.
    #[arg(long)]
    pub path: Option<PathBuf>,
}

/// `plugin build`'s arguments.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// The project's folder (default: the current folder).
    pub dir: Option<PathBuf>,
    /// The component file to write (default DIR/NAME.wasm).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The folder for cargo's (and the C build's) intermediate files (default
    /// DIR/target); one folder shared by several projects builds the guest `core` once.
    #[arg(long)]
    pub target_dir: Option<PathBuf>,
}

/// This library's errors as the CLI's: a malformed request exits 2, the rest 1.
fn cli_error(e: build::Error) -> Error {
    let usage = e.kind() == build::ErrorKind::Usage;
    let e = Error::new(e);
    if usage {
        e.into_usage()
    } else {
        e
    }
}

pub fn new(args: NewArgs) -> Result<()> {
    let language = match args.lang {
        Lang::Rust => Language::Rust,
        Lang::C => Language::C,
    };
    build::check_name(&args.name).map_err(cli_error)?;
    let dir = args.path.unwrap_or_else(|| PathBuf::from(&args.name));
    {
        // Ctrl-C waits the milliseconds the project takes: a signal would end the process
        // before the staging folder could be removed.
        let _held = snapport_engine::interrupt::defer();
        build::template::new_project(&args.name, language, &dir).map_err(cli_error)?;
    }
    println!(
        "made the {} plugin project {} in {}; build it with `snapport plugin build {}`",
        language.as_str(),
        args.name,
        dir.display(),
        dir.display()
    );
    Ok(())
}

pub fn build(args: BuildArgs) -> Result<()> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let project = Project::open(&dir).map_err(cli_error)?;
    let out = args.output.unwrap_or_else(|| project.default_output());
    let notify = |line: &str| eprintln!("{line}");
    let opts = build::BuildOptions {
        toolchain_dir: build::toolchain::default_dir(),
        target_dir: args.target_dir,
        notify: &notify,
    };
    let size = build::build(&project, &opts, &out).map_err(cli_error)?;
    println!(
        "built {} ({} plugin, {size} bytes): {}",
        project.name,
        project.language.as_str(),
        out.display()
    );
    Ok(())
}
