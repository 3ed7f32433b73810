//! `plugin list|inspect`: the backend plugins snapport finds — on the plugin path, and
//! those pools name by path — and what each can do.

use crate::Engine;
use crate::{Context as _, Result};
use serde::Serialize;
use snapport_host::{capability_names, Grants, Limits, PluginInfo};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One plugin of [`list`].
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PluginRow {
    /// A plugin that loaded and described itself.
    Found {
        /// Its file name without `.wasm` (what a pool's `plugin` names it by).
        name: String,
        /// The version it gives.
        version: String,
        /// What it can do ("read", "extents", "snapshot-create", ...).
        capabilities: Vec<&'static str>,
        /// What it says it is.
        description: String,
        /// Its file.
        path: PathBuf,
        /// The pools that name it by path (`plugin = "plugins/x.wasm"`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pools: Vec<String>,
    },
    /// A plugin file that did not load or describe itself.
    Broken {
        /// Its file name without `.wasm`.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why it did not load.
        error: String,
        /// The pools that name it by path.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pools: Vec<String>,
    },
}

/// One plugin in detail (`plugin inspect`).
#[derive(Debug, Clone, Serialize)]
pub struct PluginDetail {
    /// The name it gives itself.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it says it is.
    pub description: String,
    /// What it can do.
    pub capabilities: Vec<&'static str>,
    /// The WIT package and version it was built against, `snapport:backend@X.Y.Z`.
    pub wit: String,
    /// Its file.
    pub path: PathBuf,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// The file's size in bytes.
    pub size: u64,
}

/// Every `*.wasm` on the plugin path; the first of a name wins.
fn discover(engine: &Engine) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for dir in engine.config.plugin_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "wasm") {
                found.entry(stem(&p)).or_insert(p);
            }
        }
    }
    found
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Loads the plugin at `path` and asks it who it is, with no grants at all: `info` must
/// not touch anything.
fn describe(
    engine: &Engine,
    path: &Path,
) -> Result<(std::sync::Arc<snapport_host::Plugin>, PluginInfo)> {
    let plugin = engine.host.load(path)?;
    let mut instance = engine.host.instantiate(
        plugin.clone(),
        "-",
        Grants::default(),
        Limits::default(),
        None,
    );
    let info = instance.info()?;
    Ok((plugin, info))
}

/// `plugin list`: the plugins on the plugin path, by name, then those that pools name by
/// path (with the pools naming them; a path that is also on the plugin path shows once,
/// there).
pub fn list(engine: &Engine) -> Vec<PluginRow> {
    // Pools naming a plugin by path, by the file it resolves to.
    let mut by_path: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for (pool, p) in engine.config.pools() {
        if p.plugin.contains('/') || p.plugin.ends_with(".wasm") {
            if let Ok(path) = engine.config.plugin_path(&p.plugin) {
                by_path.entry(path).or_default().push(pool.to_string());
            }
        }
    }
    let same = |a: &Path, b: &Path| {
        a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    };
    let mut entries: Vec<(String, PathBuf, Vec<String>)> = discover(engine)
        .into_iter()
        .map(|(name, path)| {
            let pools = by_path
                .iter()
                .filter(|(p, _)| same(p, &path))
                .flat_map(|(_, pools)| pools.clone())
                .collect();
            (name, path, pools)
        })
        .collect();
    for (path, pools) in by_path {
        if !entries.iter().any(|(_, p, _)| same(p, &path)) {
            entries.push((stem(&path), path, pools));
        }
    }
    entries
        .into_iter()
        .map(|(name, path, pools)| match describe(engine, &path) {
            Ok((_, info)) => PluginRow::Found {
                name,
                version: info.version,
                capabilities: capability_names(info.capabilities),
                description: info.description,
                path,
                pools,
            },
            Err(e) => PluginRow::Broken {
                name,
                path,
                error: e.to_string(),
                pools,
            },
        })
        .collect()
}

/// `plugin inspect NAME`: the plugin a pool's `plugin = NAME` would load, in detail.
pub fn inspect(engine: &Engine, name: &str) -> Result<PluginDetail> {
    let path = engine.config.plugin_path(name)?;
    let (plugin, info) =
        describe(engine, &path).with_context(|| format!("inspecting plugin {name}"))?;
    Ok(PluginDetail {
        name: info.name,
        version: info.version,
        description: info.description,
        capabilities: capability_names(info.capabilities),
        wit: format!("{}@{}", snapport_host::WIT_PACKAGE, plugin.wit_version),
        path: plugin.path.clone(),
        sha256: plugin.digest.clone(),
        size: plugin.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapport_host::Capabilities;

    /// `plugin list` and `inspect` name every capability the WIT defines: a flag added to
    /// the WIT without a name here would be silently left out.
    #[test]
    fn every_capability_has_a_name() {
        let names = capability_names(Capabilities::all());
        // `all()` sets every bit of its words; Debug names the flags the WIT defines.
        let debug = format!("{:?}", Capabilities::all());
        let defined = debug.matches('|').count() + 1;
        assert_eq!(names.len(), defined, "{names:?} against {debug}");
        assert!(names.contains(&"thin-clone"), "{names:?}");
    }
}
