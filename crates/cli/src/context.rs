//! What every command needs: the configuration and a plugin host.

use crate::config::Config;
use anyhow::{Context as _, Result};
use snapport_host::{Host, Instance, Logger};
use std::sync::Arc;

pub struct Context {
    pub config: Config,
    pub host: Host,
}

impl Context {
    pub fn new() -> Result<Context> {
        let config = Config::load()?;
        let host = Host::new(Some(config.cache_dir()))?;
        Ok(Context { config, host })
    }

    /// A running instance of the pool's plugin.
    pub fn pool(&self, name: &str) -> Result<Instance> {
        let pool = self.config.pool(name)?;
        let path = self.config.plugin_path(&pool.plugin)?;
        let plugin = self
            .host
            .load(&path)
            .with_context(|| format!("pool {name}"))?;
        Ok(self.host.instantiate(
            plugin,
            name,
            pool.grants(),
            pool.limits(),
            Some(stderr_logger()),
        ))
    }
}

/// Plugin log lines go to stderr, warnings and errors only unless SNAPPORT_LOG=debug.
fn stderr_logger() -> Logger {
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
