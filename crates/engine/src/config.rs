//! Where snapport keeps everything, and the pools an operator configured.
//!
//! All state lives under one folder, `$SNAPPORT_HOME` (default: `$XDG_DATA_HOME/snapport`,
//! else `~/.local/share/snapport`): `config.toml`, the default pool's folder `default/`,
//! the compiled-plugin cache `cache/`, and optionally `plugins/`.
//!
//! ```toml
//! [pools.images]
//! plugin = "qcow2"                 # a plugin name, or a path to a .wasm component
//! folders = ["/var/lib/images"]    # folders whose files the plugin may open
//! devices = { data = "/dev/vdb" }  # single files or block devices, by name
//! writable = true                  # may the plugin create, write and delete volumes
//! settings = { key = "value" }     # passed to the plugin as they are
//! memory_mib = 256                 # per-instance memory cap
//! call_timeout_ms = 30000          # CPU deadline of one call into the plugin
//! snapshot_limit = 3               # snapshots per disk (default 3)
//! pre_snapshot_hooks = ["fsfreeze -f /mnt"]   # run in order before each snapshot
//! post_snapshot_hooks = ["fsfreeze -u /mnt"]  # and after it, on every path
//! retention = { keep_last = 3, keep_daily = 7 } # what `snapport prune` keeps
//!
//! [pools.images.tools.lvcreate]    # a program the plugin may have run, never via a shell:
//! command = ["lvcreate"]           # the program and the operator's fixed arguments
//! options = ["--name", "--size"]   # the only options the plugin may add
//!
//! [pools.csi]
//! plugin = "csi"
//! grpc_endpoint = "unix:///var/lib/kubelet/plugins/x/csi.sock"  # the only one it reaches
//! ```
//!
//! With no configuration at all, the pool `default` is the folder `$SNAPPORT_HOME/default/`
//! served by the qcow2 plugin: every `*.qcow2`, `*.raw` or `*.img` file there is a disk.

use crate::{bail, Context, Result};
use serde::Deserialize;
use snapport_host::{Grants, Limits};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The pool commands use without `-n`.
pub const DEFAULT_POOL: &str = "default";
/// Snapshots per disk when the pool does not say (as VMmanager's default).
pub const DEFAULT_SNAPSHOT_LIMIT: usize = 3;
/// `memory_mib`: a plugin's linear memory is 32-bit, so more than 4 GiB is never used.
pub const MEMORY_MIB: (u64, u64) = (1, 4096);
/// `call_timeout_ms`: deadlines are counted in 10 ms ticks; a day is the most one call
/// into a plugin may sensibly take.
pub const CALL_TIMEOUT_MS: (u64, u64) = (10, 86_400_000);
/// `snapshot_limit`: qcow2's own limit (QEMU's `QCOW_MAX_SNAPSHOTS`) is the most.
pub const SNAPSHOT_LIMIT: (u64, u64) = (1, 65536);
/// A configuration larger than this is not one an operator wrote.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    pools: BTreeMap<String, PoolConfig>,
}

/// One pool: `[pools.NAME]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The plugin: a name on the plugin path, or a path (with `/` or ending in `.wasm`) under the home.
    pub plugin: String,
    /// Folders whose files the plugin may open.
    #[serde(default)]
    pub folders: Vec<PathBuf>,
    /// Single files or devices the plugin may open, by the name it knows them by.
    #[serde(default)]
    pub devices: BTreeMap<String, PathBuf>,
    /// Whether the plugin may create, write and delete volumes.
    #[serde(default)]
    pub writable: bool,
    /// Passed to the plugin as they are.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Per-instance memory cap, within [`MEMORY_MIB`].
    pub memory_mib: Option<u64>,
    /// CPU deadline of one call, within [`CALL_TIMEOUT_MS`].
    pub call_timeout_ms: Option<u64>,
    /// Snapshots one disk may have (default 3). Lowering it keeps the snapshots a disk
    /// has; only new ones are refused until it is under the limit again.
    pub snapshot_limit: Option<usize>,
    /// Commands (`sh -c`) run in order before each snapshot of this pool's disks, to
    /// quiesce what uses them; a failure means the snapshot is not consistent.
    #[serde(default)]
    pub pre_snapshot_hooks: Vec<String>,
    /// Commands run in order after each snapshot, on every path.
    #[serde(default)]
    pub post_snapshot_hooks: Vec<String>,
    /// What `snapport prune` keeps when its command line gives no `--keep-*`.
    pub retention: Option<crate::retention::Policy>,
    /// Programs the plugin may have run (LVM: `lvcreate`, `lvremove`), by tool name.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolConfig>,
    /// The one gRPC endpoint (a CSI driver) the plugin's calls go to:
    /// `unix:///path.sock` or `tcp://IP:PORT`.
    pub grpc_endpoint: Option<String>,
}

/// `[pools.NAME.tools.TOOL]`: the command (no shell) and the options a plugin may add.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// The program and the operator's fixed arguments.
    pub command: Vec<String>,
    /// Options the plugin may add; its other arguments must be plain words.
    #[serde(default)]
    pub options: Vec<String>,
}

impl PoolConfig {
    /// What the pool's plugin may touch.
    pub fn grants(&self) -> Grants {
        Grants {
            folders: self.folders.clone(),
            devices: self.devices.clone(),
            settings: self.settings.clone(),
            writable: self.writable,
            sync: false,
            tools: self
                .tools
                .iter()
                .map(|(name, t)| {
                    let grant = snapport_host::tools::ToolGrant {
                        command: t.command.clone(),
                        options: t.options.clone(),
                    };
                    (name.clone(), grant)
                })
                .collect(),
            grpc_endpoint: self.grpc_endpoint.clone(),
        }
    }

    /// Limits within [`MEMORY_MIB`] and [`CALL_TIMEOUT_MS`] (checked when the
    /// configuration is loaded).
    pub fn limits(&self) -> Limits {
        let mut l = Limits::default();
        if let Some(m) = self.memory_mib {
            l.memory_bytes = (m as usize) << 20;
        }
        if let Some(t) = self.call_timeout_ms {
            l.call_timeout = Duration::from_millis(t);
        }
        l
    }

    /// Refuses a limit that is zero or beyond any sense, naming the key: a zero memory
    /// cap or deadline would make every call fail with a message about the plugin, and a
    /// huge one would overflow or never fire.
    fn check_limits(&self) -> std::result::Result<(), String> {
        let range = |key: &str, v: Option<u64>, (lo, hi): (u64, u64), unit: &str| match v {
            Some(v) if v < lo || v > hi => Err(format!(
                "{key} = {v} is out of range: give {lo} to {hi} {unit}"
            )),
            _ => Ok(()),
        };
        range("memory_mib", self.memory_mib, MEMORY_MIB, "MiB")?;
        range(
            "call_timeout_ms",
            self.call_timeout_ms,
            CALL_TIMEOUT_MS,
            "milliseconds",
        )?;
        range(
            "snapshot_limit",
            self.snapshot_limit.map(|n| n as u64),
            SNAPSHOT_LIMIT,
            "snapshots per disk",
        )
    }

    /// Every folder and device the pool grants exists, and each folder is a folder: a
    /// pool with a missing one would list nothing or fail later with a plugin's words.
    fn check_paths(&self, pool: &str, config: &Path) -> Result<()> {
        for f in &self.folders {
            match std::fs::metadata(f) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => bail!(
                    "pool {pool}: {} (in folders) is not a folder; fix folders in {}",
                    f.display(),
                    config.display()
                ),
                Err(e) => bail!(
                    "pool {pool}: folder {} cannot be used ({e}); create it (mkdir -p {}) or fix folders in {}",
                    f.display(),
                    f.display(),
                    config.display()
                ),
            }
        }
        for (name, d) in &self.devices {
            if let Err(e) = std::fs::metadata(d) {
                bail!(
                    "pool {pool}: device {name} = {} cannot be used ({e}); fix devices in {}",
                    d.display(),
                    config.display()
                );
            }
        }
        Ok(())
    }
}

/// The configuration: the home folder and its pools.
pub struct Config {
    /// `$SNAPPORT_HOME`: config, state, cache, plugins.
    pub home: PathBuf,
    pools: BTreeMap<String, PoolConfig>,
}

impl Config {
    /// The configuration of `$SNAPPORT_HOME/config.toml` (or the default pool alone).
    pub fn load() -> Result<Config> {
        let home = home()?;
        let path = home.join("config.toml");
        let mut file = match snapport_core::io::read_regular_file(&path, MAX_CONFIG_BYTES) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| crate::format_err!("{} is not UTF-8 text", path.display()))?;
                toml::from_str::<ConfigFile>(&text).with_context(|| {
                    format!("{} is not a valid snapport configuration", path.display())
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // Relative folders and devices are relative to the home folder.
        for (name, pool) in file.pools.iter_mut() {
            snapport_core::name::check(&format!("{}: pool", path.display()), name)?;
            pool.check_limits()
                .map_err(|why| crate::format_err!("{}: pool {name}: {why}", path.display()))?;
            pool.folders = pool.folders.iter().map(|f| home.join(f)).collect();
            if let Some((tool, _)) = pool.tools.iter().find(|(_, t)| t.command.is_empty()) {
                bail!("{}: tools.{tool} has an empty command", path.display());
            }
            if let Some(e) = &pool.grpc_endpoint {
                snapport_host::grpc::parse_endpoint(e)
                    .map_err(|why| crate::format_err!("{}: grpc_endpoint {why}", path.display()))?;
            }
            for d in pool.devices.values_mut() {
                *d = home.join(&*d);
            }
        }
        file.pools
            .entry(DEFAULT_POOL.into())
            .or_insert_with(|| PoolConfig {
                plugin: "qcow2".into(),
                folders: vec![home.join(DEFAULT_POOL)],
                devices: BTreeMap::new(),
                writable: true,
                settings: BTreeMap::new(),
                memory_mib: None,
                call_timeout_ms: None,
                snapshot_limit: None,
                pre_snapshot_hooks: Vec::new(),
                post_snapshot_hooks: Vec::new(),
                retention: None,
                tools: BTreeMap::new(),
                grpc_endpoint: None,
            });
        Ok(Config {
            home,
            pools: file.pools,
        })
    }

    /// The pool `name`, checked; an error lists the pools there are.
    pub fn pool(&self, name: &str) -> Result<&PoolConfig> {
        match self.pools.get(name) {
            Some(p) => {
                if name == DEFAULT_POOL {
                    // The embedded default pool's folder exists as soon as it is used.
                    for f in &p.folders {
                        std::fs::create_dir_all(f)
                            .with_context(|| format!("creating {}", f.display()))?;
                    }
                }
                p.check_paths(name, &self.home.join("config.toml"))?;
                Ok(p)
            }
            None => bail!(
                "no pool {name:?}; pools: {} (declare pools in {})",
                self.pools.keys().cloned().collect::<Vec<_>>().join(", "),
                self.home.join("config.toml").display()
            ),
        }
    }

    /// Every configured pool, the default one included.
    pub fn pools(&self) -> impl Iterator<Item = (&str, &PoolConfig)> {
        self.pools.iter().map(|(name, p)| (name.as_str(), p))
    }

    /// Where compiled plugins are cached.
    pub fn cache_dir(&self) -> PathBuf {
        self.home.join("cache")
    }

    /// Folders searched for `NAME.wasm`, in order.
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("SNAPPORT_PLUGIN_PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.push(self.home.join("plugins"));
        if let Some(exe_dir) = std::env::current_exe()
            .ok()
            .as_deref()
            .and_then(Path::parent)
        {
            dirs.push(exe_dir.join("plugins"));
            // target/release/snapport next to target/plugins in a source checkout.
            if let Some(up) = exe_dir.parent() {
                dirs.push(up.join("plugins"));
            }
        }
        dirs
    }

    /// The component file for a pool's `plugin` (a name or a path).
    pub fn plugin_path(&self, plugin: &str) -> Result<PathBuf> {
        if plugin.contains('/') || plugin.ends_with(".wasm") {
            return Ok(self.home.join(plugin));
        }
        let dirs = self.plugin_dirs();
        dirs.iter()
            .map(|d| d.join(format!("{plugin}.wasm")))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no plugin {plugin:?} (looked for {plugin}.wasm in {}); build plugins with `cargo xtask plugins`",
                    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                )
            })
    }
}

fn home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("SNAPPORT_HOME") {
        return Ok(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("snapport"));
    }
    let home = std::env::var_os("HOME").context("neither SNAPPORT_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/snapport"))
}
