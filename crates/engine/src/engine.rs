//! What every operation needs: the configuration and a plugin host.

use crate::config::Config;
use crate::{Context as _, Result};
use snapport_host::{Grants, Host, Instance, Limits, Logger};
use std::path::Path;

/// The configuration (pools, plugins, home) and the plugin host every operation runs
/// with. Make one per process: the host caches compiled plugins.
pub struct Engine {
    /// Pools, plugins and the home folder, from the config file or the environment.
    pub config: Config,
    /// Loads and runs the backend plugins.
    pub host: Host,
    logger: Option<Logger>,
}

impl Engine {
    /// The configuration from `$SNAPPORT_CONFIG` / `$SNAPPORT_HOME` (see [`Config::load`]);
    /// `logger` receives plugins' log lines (and the host's own about loading them).
    pub fn new(logger: Option<Logger>) -> Result<Engine> {
        Engine::with_config(Config::load()?, logger)
    }

    /// An engine over a configuration the caller built.
    pub fn with_config(config: Config, logger: Option<Logger>) -> Result<Engine> {
        let mut host = Host::new(Some(config.cache_dir()))?;
        if let Some(logger) = &logger {
            host.set_logger(logger.clone());
        }
        Ok(Engine {
            config,
            host,
            logger,
        })
    }

    /// A running instance of the pool's plugin.
    pub fn pool(&self, name: &str) -> Result<Instance> {
        self.pool_with(name, false)
    }

    /// A running instance of the pool's plugin; with `sync`, the plugin's `flush` makes
    /// written data durable (`--fsync`).
    pub fn pool_with(&self, name: &str, sync: bool) -> Result<Instance> {
        let pool = self.config.pool(name)?;
        let path = self.config.plugin_path(&pool.plugin)?;
        let plugin = self
            .host
            .load(&path)
            .with_context(|| format!("pool {name}"))?;
        let mut grants = pool.grants();
        grants.sync = sync;
        Ok(self
            .host
            .instantiate(plugin, name, grants, pool.limits(), self.logger.clone()))
    }

    /// The qcow2 plugin over one image file, read-only: how an upload reads a qcow2
    /// source, its tables parsed inside the sandbox. The file is granted under its own
    /// name; its folder is granted read-only for backing files.
    pub fn file_source(&self, file: &Path) -> Result<(Instance, String)> {
        let path = self.config.plugin_path("qcow2")?;
        let plugin = self
            .host
            .load(&path)
            .context("the qcow2 plugin, to read the source")?;
        let file = file
            .canonicalize()
            .with_context(|| format!("opening {}", file.display()))?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut grants = Grants::default();
        grants.devices.insert(name.clone(), file.clone());
        if let Some(dir) = file.parent() {
            grants.folders.push(dir.to_path_buf());
        }
        let instance = self.host.instantiate(
            plugin,
            "upload-source",
            grants,
            Limits::default(),
            self.logger.clone(),
        );
        Ok((instance, name))
    }
}
