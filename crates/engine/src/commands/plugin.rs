//! `snapport plugin list|inspect`.

use crate::Engine;
use crate::{Context as _, Result};
use snapport_host::{Capabilities, Grants, Limits, PluginInfo};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Plugins found on the plugin path, with their version and capabilities.
    List {
        #[arg(short = 'o', long = "output", default_value = "table")]
        output: String,
    },
    /// One plugin in detail: file, digest, WIT version, capabilities.
    Inspect {
        name: String,
        #[arg(short = 'o', long = "output", default_value = "table")]
        output: String,
    },
}

fn capability_names(c: Capabilities) -> Vec<&'static str> {
    [
        (Capabilities::READ, "read"),
        (Capabilities::WRITE, "write"),
        (Capabilities::ZERO, "zero"),
        (Capabilities::TRIM, "trim"),
        (Capabilities::EXTENTS, "extents"),
        (Capabilities::CHANGED_BLOCKS, "changed-blocks"),
        (Capabilities::SNAPSHOT_CREATE, "snapshot-create"),
        (Capabilities::SNAPSHOT_DELETE, "snapshot-delete"),
        (Capabilities::SNAPSHOT_RESTORE, "snapshot-restore"),
        (Capabilities::VOLUME_CREATE, "volume-create"),
        (Capabilities::VOLUME_DELETE, "volume-delete"),
    ]
    .into_iter()
    .filter(|(f, _)| c.contains(*f))
    .map(|(_, n)| n)
    .collect()
}

/// Every `*.wasm` on the plugin path; the first of a name wins.
fn discover(ctx: &Engine) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for dir in ctx.config.plugin_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "wasm") {
                let name = p
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                found.entry(name).or_insert(p);
            }
        }
    }
    found
}

fn describe(
    ctx: &Engine,
    path: &std::path::Path,
) -> Result<(std::sync::Arc<snapport_host::Plugin>, PluginInfo)> {
    let plugin = ctx.host.load(path)?;
    // No grants at all: `info` must not touch anything.
    let mut instance = ctx.host.instantiate(
        plugin.clone(),
        "-",
        Grants::default(),
        Limits::default(),
        None,
    );
    let info = instance.info()?;
    Ok((plugin, info))
}

pub fn run(cmd: Command) -> Result<()> {
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    match cmd {
        Command::List { output } => {
            let mut rows = Vec::new();
            for (name, path) in discover(&ctx) {
                rows.push(match describe(&ctx, &path) {
                    Ok((_, info)) => serde_json::json!({
                        "name": name, "version": info.version, "capabilities": capability_names(info.capabilities),
                        "description": info.description, "path": path,
                    }),
                    Err(e) => serde_json::json!({ "name": name, "path": path, "error": e.to_string() }),
                });
            }
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<16} {:<9} {:<40} PATH",
                    "NAME", "VERSION", "CAPABILITIES"
                );
                for r in rows {
                    let caps = match r.get("error") {
                        Some(e) => format!("error: {}", e.as_str().unwrap_or_default()),
                        None => r["capabilities"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|v| v.as_str())
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default(),
                    };
                    println!(
                        "{:<16} {:<9} {:<40} {}",
                        r["name"].as_str().unwrap_or_default(),
                        r.get("version").and_then(|v| v.as_str()).unwrap_or("-"),
                        caps,
                        r["path"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        Command::Inspect { name, output } => {
            let path = ctx.config.plugin_path(&name)?;
            let (plugin, info) =
                describe(&ctx, &path).with_context(|| format!("inspecting plugin {name}"))?;
            let doc = serde_json::json!({
                "name": info.name,
                "version": info.version,
                "description": info.description,
                "capabilities": capability_names(info.capabilities),
                "wit": format!("{}@{}", snapport_host::WIT_PACKAGE, plugin.wit_version),
                "path": plugin.path,
                "sha256": plugin.digest,
                "size": plugin.size,
            });
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
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
        }
    }
    Ok(())
}
