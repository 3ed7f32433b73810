//! `plugin test`: the backend conformance suite, as a product feature. A plugin author (or
//! an operator about to trust a plugin) runs it on a component file and learns, case by
//! case, whether the plugin keeps the contract of `wit/backend.wit`: what it lists reads
//! whole and the same twice; what it is given to write reads back byte for byte, holes
//! and zero runs included; snapshots keep old content, changed extents cover every change,
//! clones read through and leave their parent alone; and every call answers as the WIT
//! says when it cannot (not-found, conflict, unsupported for what it does not declare),
//! with words.
//!
//! Without grants of the caller's the suite makes its own scratch pool: a fresh folder
//! granted writable, removed afterwards (on an interruption too, see
//! [`crate::interrupt`]). On an operator's pool or folders it writes only when asked,
//! makes only `snapport-test-*` volumes and snapshots, and removes them afterwards.
//!
//! The engine never prints: each case goes to the caller's callback as it ends, and the
//! report holds them all.

mod cases;
mod content;

use crate::{Context as _, Engine, Result};
use serde::Serialize;
use snapport_host::{Grants, Limits, Logger};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to test, and on what grants.
#[derive(Debug, Clone, Default)]
pub struct TestRequest {
    /// The component file, or the name of a plugin on the plugin path; none for the
    /// plugin of [`TestRequest::pool`].
    pub plugin: Option<String>,
    /// A configured pool whose grants (folders, devices, tools, gRPC endpoint, settings,
    /// limits) the plugin gets.
    pub pool: Option<String>,
    /// Settings passed to the plugin, over the pool's.
    pub settings: BTreeMap<String, String>,
    /// Folders granted, after the pool's.
    pub folders: Vec<PathBuf>,
    /// Devices granted by name, over the pool's.
    pub devices: BTreeMap<String, PathBuf>,
    /// Whether the suite may write into the operator's pool or folders (it always may
    /// into its own scratch pool).
    pub writable: bool,
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The plugin did what the contract says.
    Ok,
    /// It did not; `detail` says what it did.
    Fail,
    /// The case does not apply (a capability not declared, nothing to read, no writes
    /// allowed); `detail` says why.
    Skip,
}

/// One case of the suite.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Stable dotted name, e.g. `write.read-back`.
    pub name: &'static str,
    /// How it ended.
    pub status: Status,
    /// What was checked, what failed, or why it was skipped.
    pub detail: String,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    /// The plugin's file.
    pub path: PathBuf,
    /// The name it gives itself.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The WIT it was built against, `snapport:backend@X.Y.Z`.
    pub wit: String,
    /// What it declares.
    pub capabilities: Vec<&'static str>,
    /// The operator's pool tested, or none for the suite's scratch pool.
    pub pool: Option<String>,
    /// Whether write cases ran.
    pub writable: bool,
    /// Every case, in the order run.
    pub cases: Vec<CaseResult>,
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases that did not apply.
    pub skipped: usize,
}

impl TestReport {
    /// Names of the cases that failed.
    pub fn failures(&self) -> Vec<&'static str> {
        self.cases
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name)
            .collect()
    }
}

/// The pool name the suite's instance runs under (in the plugin's messages and logs).
const SCRATCH_POOL: &str = "plugin-test";

/// Runs the suite. `on_case` hears each case as it ends; `logger` gets the plugin's log
/// lines. Fails (rather than reporting cases) only when there is nothing to test: the
/// file is not a loadable plugin component, the pool or a grant does not exist, or the
/// scratch folder cannot be made. Failed cases are in the report, not an error.
pub fn run(
    engine: &Engine,
    request: &TestRequest,
    logger: Option<Logger>,
    on_case: &mut dyn FnMut(&CaseResult),
) -> Result<TestReport> {
    let path = match (&request.plugin, &request.pool) {
        (Some(plugin), _) => plugin_file(engine, plugin)?,
        (None, Some(pool)) => engine
            .config
            .plugin_path(&engine.config.pool(pool)?.plugin)?,
        (None, None) => crate::usage!("name the plugin to test: a FILE.wasm, or a pool (-n POOL)"),
    };
    // The host's error names the file and says what it is instead.
    let plugin = engine.host.load(&path)?;

    let (grants, limits, pool, scratch) = grants(engine, request)?;
    let writable = grants.writable;
    let pool_name = pool.clone().unwrap_or_else(|| SCRATCH_POOL.to_string());
    let mut suite = cases::Suite::new(
        engine,
        plugin,
        &pool_name,
        grants,
        limits,
        logger,
        scratch.is_some(),
        on_case,
    );
    suite.run();
    let (info, cases) = suite.finish();
    drop(scratch);

    let count = |s: Status| cases.iter().filter(|c| c.status == s).count();
    Ok(TestReport {
        path,
        plugin: info.name,
        version: info.version,
        wit: info.wit,
        capabilities: info.capabilities,
        pool,
        writable,
        passed: count(Status::Ok),
        failed: count(Status::Fail),
        skipped: count(Status::Skip),
        cases,
    })
}

/// `plugin` as a file, or as a plugin name on the plugin path.
fn plugin_file(engine: &Engine, plugin: &str) -> Result<PathBuf> {
    let given = Path::new(plugin);
    // A folder of the same name (the source of plugins/raw/) is not the plugin: the name
    // is looked up on the plugin path then.
    if given.is_file() || plugin.contains('/') || plugin.ends_with(".wasm") {
        if !given.is_file() {
            crate::bail!("{plugin}: no such plugin file");
        }
        return Ok(given.to_path_buf());
    }
    engine.config.plugin_path(plugin)
}

/// The grants the plugin gets: the pool's, with the request's folders, devices and
/// settings added; or, with neither pool nor folders nor devices, a fresh scratch folder
/// granted writable.
fn grants(
    engine: &Engine,
    request: &TestRequest,
) -> Result<(Grants, Limits, Option<String>, Option<Scratch>)> {
    let mut grants = Grants::default();
    let mut limits = Limits::default();
    if let Some(name) = &request.pool {
        let pool = engine.config.pool(name)?;
        grants = pool.grants();
        limits = pool.limits();
    }
    for f in &request.folders {
        if !f.is_dir() {
            crate::usage!("--folder {}: not a folder", f.display());
        }
        grants.folders.push(f.clone());
    }
    for (name, d) in &request.devices {
        if let Err(e) = std::fs::metadata(d) {
            crate::usage!("--device {name}={}: {e}", d.display());
        }
        grants.devices.insert(name.clone(), d.clone());
    }
    grants.settings.extend(request.settings.clone());
    let scratch =
        if request.pool.is_none() && grants.folders.is_empty() && grants.devices.is_empty() {
            let s = Scratch::new()?;
            grants.folders.push(s.path.clone());
            grants.writable = true;
            Some(s)
        } else {
            grants.writable = request.writable;
            None
        };
    Ok((grants, limits, request.pool.clone(), scratch))
}

/// The suite's own pool folder: made fresh under the temporary folder, removed when
/// dropped, and by the interruption cleanup if the process is stopped first.
struct Scratch {
    path: PathBuf,
    /// The folder itself, locked (`flock`) while this run lives: what tells another
    /// run's [`sweep`] that the pool is in use, in any PID namespace.
    _lock: std::fs::File,
    _registered: crate::interrupt::RemoveTree,
}

impl Scratch {
    fn new() -> Result<Scratch> {
        let base = std::env::temp_dir();
        let pid = std::process::id();
        sweep(&base);
        for n in 0..1000 {
            let name = format!("snapport-plugin-test-{pid}-{n}");
            // Made and locked under a name the sweep ignores, then renamed (the lock
            // goes with the folder): no other run ever sees it unlocked.
            let making = base.join(format!(".{name}.new"));
            let path = base.join(&name);
            match std::fs::create_dir(&making) {
                Ok(()) => {
                    let registered = crate::interrupt::remove_tree_on_signal(&making);
                    let lock = std::fs::File::open(&making)
                        .and_then(|f| f.try_lock().map(|()| f).map_err(std::io::Error::from))
                        .and_then(|f| {
                            snapport_core::output::rename_no_replace(&making, &path).map(|()| f)
                        });
                    let lock = match lock {
                        Ok(lock) => lock,
                        Err(e) => {
                            snapport_core::cleanup::remove_tree(&making);
                            if e.kind() == std::io::ErrorKind::AlreadyExists {
                                continue;
                            }
                            return Err(e).with_context(|| {
                                format!("making a scratch pool folder in {}", base.display())
                            });
                        }
                    };
                    drop(registered);
                    let registered = crate::interrupt::remove_tree_on_signal(&path);
                    return Ok(Scratch {
                        path,
                        _lock: lock,
                        _registered: registered,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("making a scratch pool folder in {}", base.display())
                    })
                }
            }
        }
        crate::bail!(
            "making a scratch pool folder in {}: 1000 names taken",
            base.display()
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The same removal as on a signal: any depth the plugin could make.
        snapport_core::cleanup::remove_tree(&self.path);
    }
}

/// Removes the scratch pools of `plugin test` runs that were killed (SIGKILL, a power
/// cut) before they could: `snapport-plugin-test-PID-N` folders in `base` of ours that
/// no run holds locked. The lock, not the PID, says a run is alive: a run in another
/// PID namespace sharing this folder has a PID this one cannot see.
fn sweep(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours_by_name = name
            .to_str()
            .and_then(|n| n.strip_prefix("snapport-plugin-test-"))
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, n)| pid.parse::<u32>().is_ok() && n.parse::<u32>().is_ok());
        // Not followed if a link: symlink_metadata.
        let ours = ours_by_name && entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if !ours {
            continue;
        }
        let path = entry.path();
        // Held while removing: a run starting now cannot take the folder meanwhile.
        if let Ok(folder) = std::fs::File::open(&path) {
            if folder.try_lock().is_ok() {
                snapport_core::cleanup::remove_tree(&path);
            }
        }
    }
}
