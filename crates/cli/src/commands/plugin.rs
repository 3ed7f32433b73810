//! `snapport plugin list|inspect|new|build|test`.

use crate::render::{engine, print_json_pretty, ReportArgs};
use snapport_engine::ops::plugin::{self, PluginRow};
use snapport_engine::Result;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Plugins found on the plugin path, and those pools name by path, with their
    /// version and capabilities.
    List {
        #[command(flatten)]
        out: ReportArgs,
    },
    /// One plugin in detail: file, digest, WIT version, capabilities.
    Inspect {
        name: String,
        #[command(flatten)]
        out: ReportArgs,
    },
    /// Make a new plugin project (Rust or C) that builds and passes `plugin test` as it is.
    New(super::plugin_build::NewArgs),
    /// Build a plugin project (Rust or C) into a component, DIR/NAME.wasm.
    Build(super::plugin_build::BuildArgs),
    /// Run the backend conformance suite on a plugin file: one line per case, exit 0
    /// only if none failed.
    Test(super::plugin_test::Args),
}

pub fn run(cmd: Command) -> Result<()> {
    // An author's commands need no configuration or pool.
    let cmd = match cmd {
        Command::New(a) => return super::plugin_build::new(a),
        Command::Build(a) => return super::plugin_build::build(a),
        other => other,
    };
    let engine = engine()?;
    match cmd {
        Command::List { out } => {
            let rows = plugin::list(&engine);
            if out.json() {
                print_json_pretty(&rows);
                return Ok(());
            }
            if !out.text() {
                return Ok(());
            }
            println!(
                "{:<16} {:<9} {:<40} PATH",
                "NAME", "VERSION", "CAPABILITIES"
            );
            for r in rows {
                let (name, version, caps, path, pools) = match r {
                    PluginRow::Found {
                        name,
                        version,
                        capabilities,
                        path,
                        pools,
                        ..
                    } => (name, version, capabilities.join(","), path, pools),
                    PluginRow::Broken {
                        name,
                        path,
                        error,
                        pools,
                    } => (name, "-".into(), format!("error: {error}"), path, pools),
                };
                let pools = if pools.is_empty() {
                    String::new()
                } else {
                    format!(" (pools: {})", pools.join(", "))
                };
                println!(
                    "{name:<16} {version:<9} {caps:<40} {}{pools}",
                    path.display()
                );
            }
        }
        Command::Inspect { name, out } => {
            let detail = plugin::inspect(&engine, &name)?;
            if out.json() {
                print_json_pretty(&detail);
                return Ok(());
            }
            if !out.text() {
                return Ok(());
            }
            let doc = serde_json::to_value(&detail)?;
            for (k, v) in doc.as_object().expect("object") {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                };
                println!("{k:<13} {v}");
            }
        }
        Command::Test(args) => super::plugin_test::run(&engine, args)?,
        Command::New(_) | Command::Build(_) => unreachable!("handled above"),
    }
    Ok(())
}
