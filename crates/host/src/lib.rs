//! The wasmtime host for snapport backend plugins.
//!
//! A plugin is a WebAssembly component exporting `snapport:backend/backend@0.1.z`, for
//! any version from 0.1.0 up to this host's (`wit/backend.wit` says how versions grow).
//! The host validates it before anything runs (it must export that interface and import
//! nothing but snapport's own host interfaces: no WASI, so no ambient file system,
//! network, clock or environment), compiles it once into a cache keyed by the component's
//! SHA-256 and the engine's version and configuration (each entry checked against its
//! own SHA-256 before it is loaded), and runs each pool's instance in its own
//! store with a memory cap and a CPU deadline per call (epoch interruption). A trap is a
//! typed error naming the plugin and what happened; the poisoned instance is thrown away
//! and the next call gets a fresh one from the pre-instantiated component.

mod cache;
mod cache_entry;
mod error;
pub mod grants;
pub mod grpc;
mod grpc_frame;
pub mod locks;
pub mod tools;
mod untrusted;

pub use error::{BackendErrorKind, Error, ErrorKind, Result};
pub use grants::{Grants, Logger};
pub use untrusted::printable;

use grants::GrantedDevices;
use sha2::{Digest, Sha256};
use snapport_core::extent::{Device, Encoded, Extent, ExtentPage, Location, VolumeSource};
use snapport_core::import::VolumeTarget;
use snapport_core::name;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, ResourceAny};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};

/// Generated bindings of `wit/backend.wit`.
pub mod bindings {
    wasmtime::component::bindgen!({ world: "backend-plugin", path: "../../wit" });
}

use bindings::exports::snapport::backend::backend as guest;
pub use bindings::exports::snapport::backend::backend::PluginInfo;
use bindings::snapport::backend::types::{self as wit, Access, BackendError, LogLevel};
pub use bindings::snapport::backend::types::{
    Capabilities, SnapshotInfo, SnapshotPhase, VolumeInfo, VolumeKind,
};

/// Every capability with its WIT name, in the WIT's order: what `plugin list`, `plugin
/// inspect` and `plugin test` print, kept in one place so a flag added to the WIT is
/// named everywhere at once (a test checks none is missing).
pub const CAPABILITIES: [(Capabilities, &str); 12] = [
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
    (Capabilities::THIN_CLONE, "thin-clone"),
];

/// The names of the capabilities in `c`, in the WIT's order.
pub fn capability_names(c: Capabilities) -> Vec<&'static str> {
    CAPABILITIES
        .into_iter()
        .filter(|(f, _)| c.contains(*f))
        .map(|(_, n)| n)
        .collect()
}

/// The WIT package this host speaks, at its newest version. Plugins built against an
/// earlier version of the same 0.1 series load too: wasmtime links names by semver
/// compatibility, and a patch version of this WIT only adds.
pub const WIT_PACKAGE: &str = "snapport:backend";
pub const WIT_VERSION: &str = "0.1.2";
/// Interfaces a plugin may import: its only authority.
const GRANTED_IMPORTS: &[&str] = &["types", "host", "grpc", "tools"];
/// Epoch tick: the granularity of CPU deadlines.
const TICK: Duration = Duration::from_millis(10);
/// The largest component file loaded (snapport's own plugins are under 1 MiB).
const MAX_PLUGIN_BYTES: u64 = 64 << 20;
/// Extents asked for per `map-extents` call.
const PAGE_EXTENTS: u32 = 4096;
/// The most volumes or snapshots one listing may hold.
pub const MAX_LISTED: usize = 100_000;
/// The most bytes of a plugin's error text (or free-form field) that reach the operator.
pub const MAX_TEXT: usize = 4096;

/// Per-instance limits, overridable per pool.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory cap of one plugin instance.
    pub memory_bytes: usize,
    /// CPU time one call into the plugin may take.
    pub call_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// Whether a plugin built against WIT `version` runs here: the same series as
/// [`WIT_VERSION`] (same major; for 0.x, same minor, as semver reads 0.x) and not newer,
/// since a newer plugin may call host functions this host does not have.
fn supported_wit_version(version: &str) -> std::result::Result<(), String> {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut it = v.split('.').map(|n| n.parse::<u64>().ok());
        let triple = (it.next()??, it.next()??, it.next()??);
        it.next().is_none().then_some(triple)
    };
    let ours = parse(WIT_VERSION).expect("WIT_VERSION is major.minor.patch");
    let rebuild = "rebuild the plugin against wit/ of this release";
    let Some(theirs) = parse(version) else {
        return Err(format!(
            "exports {WIT_PACKAGE}/backend@{version}, not a version this snapport knows; {rebuild}"
        ));
    };
    let series = |(major, minor, _): (u64, u64, u64)| (major, if major == 0 { minor } else { 0 });
    if series(theirs) != series(ours) {
        return Err(format!("is built against {WIT_PACKAGE}@{version}, but this snapport speaks {WIT_VERSION} (and earlier versions of its series); {rebuild}"));
    }
    if theirs > ours {
        return Err(format!("is built against {WIT_PACKAGE}@{version}, newer than this snapport's {WIT_VERSION}; upgrade snapport, or {rebuild}"));
    }
    Ok(())
}

/// Why `bytes` cannot be a component, for the files an author most often hands over by
/// mistake, in one line that says what to do; `None` leaves the verdict to wasmtime.
fn not_a_component(bytes: &[u8]) -> Option<&'static str> {
    /// Bytes 4..8 of a core module's preamble (version 1); a component has 0x0d 0 1 0.
    const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
    if bytes.is_empty() {
        return Some("is empty, not a WebAssembly component");
    }
    if !bytes.starts_with(b"\0asm") {
        return Some("is not a WebAssembly file (it does not start with the `\\0asm` magic)");
    }
    if bytes.get(4..8) == Some(&CORE_VERSION[..]) {
        return Some("is a core WebAssembly module, not a component: build the plugin with `snapport plugin build`, or wrap the module with `wasm-tools component new MODULE.wasm -o PLUGIN.wasm`");
    }
    None
}

/// The engine every plugin runs on, its epoch ticker, and the compiled-component cache.
pub struct Host {
    engine: Engine,
    linker: Linker<State>,
    cache: Option<cache::Cache>,
    /// Receives the host's own debug lines about loading plugins.
    logger: Option<Logger>,
    stop: Arc<AtomicBool>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a store holds: the devices granted and opened, and the memory limiter.
pub struct State {
    devices: GrantedDevices,
    limits: StoreLimits,
    /// The pool's gRPC endpoint, connected on the first call.
    grpc: Option<grpc::GrpcClient>,
    /// What the plugin said (`panicked`) in the current call before it traps: the
    /// operator reads its panic message instead of "wasm `unreachable`".
    panicked: Option<String>,
}

impl Host {
    /// Creates the engine. `cache_dir` holds compiled components (created if missing);
    /// with `None`, components compile on every load.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Host> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config)
            .map_err(|e| Error::new(ErrorKind::Io, format!("starting wasmtime: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        bindings::BackendPlugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| Error::new(ErrorKind::Io, format!("linking host functions: {e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, ticker_stop) = (engine.clone(), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("snapport-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| Error::new(ErrorKind::Io, format!("starting the epoch ticker: {e}")))?;
        Ok(Host {
            cache: cache_dir.map(|dir| cache::Cache::new(dir, &engine)),
            engine,
            linker,
            logger: None,
            stop,
        })
    }

    /// Sends the host's own debug lines (why a plugin's compiled code did not come from
    /// the cache) to `logger`, under the plugin's name.
    pub fn set_logger(&mut self, logger: Logger) {
        self.logger = Some(logger);
    }

    /// Loads, validates and compiles (or takes from the cache) the component at `path`.
    pub fn load(&self, path: &Path) -> Result<Arc<Plugin>> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = snapport_core::io::read_regular_file(path, MAX_PLUGIN_BYTES).map_err(|e| {
            Error::new(
                ErrorKind::NotFound,
                format!("plugin {name}: reading {}: {e}", path.display()),
            )
        })?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let digest = hex::encode(sha256);
        let bad = |what: String| {
            Error::new(
                ErrorKind::InvalidPlugin,
                format!("plugin {name} ({}): {what}", path.display()),
            )
        };
        if let Some(why) = not_a_component(&bytes) {
            return Err(bad(why.to_string()));
        }
        let component = self
            .compile(&name, &bytes, sha256)
            .map_err(|e| bad(format!("not a valid component: {e:#}")))?;
        let wit_version = self.check_interfaces(&component).map_err(bad)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| bad(format!("cannot be linked: {e:#}")))?;
        let pre = bindings::BackendPluginPre::new(pre)
            .map_err(|e| bad(format!("does not match the WIT: {e:#}")))?;
        Ok(Arc::new(Plugin {
            name,
            path: path.to_path_buf(),
            digest,
            size: bytes.len() as u64,
            wit_version,
            pre,
        }))
    }

    /// Compiles `bytes`, or takes its verified code from the cache when there is one.
    fn compile(&self, name: &str, bytes: &[u8], sha256: [u8; 32]) -> wasmtime::Result<Component> {
        let Some(cache) = &self.cache else {
            return Component::new(&self.engine, bytes);
        };
        cache.component(&self.engine, bytes, sha256, &|line| {
            if let Some(log) = &self.logger {
                log(name, LogLevel::Debug, &line);
            }
        })
    }

    /// The component must export `snapport:backend/backend` at a version this host
    /// supports, and import only snapport's host interfaces of that same version.
    /// Returns the version.
    fn check_interfaces(&self, component: &Component) -> std::result::Result<String, String> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let prefix = format!("{WIT_PACKAGE}/backend@");
        let Some(version) = exports.iter().find_map(|e| e.strip_prefix(&prefix)) else {
            return Err(format!(
                "exports no {WIT_PACKAGE}/backend (exports: {})",
                exports.join(", ")
            ));
        };
        supported_wit_version(version)?;
        for (name, _) in ty.imports(&self.engine) {
            let ok = GRANTED_IMPORTS
                .iter()
                .any(|i| name == format!("{WIT_PACKAGE}/{i}@{version}"));
            if !ok {
                return Err(format!("imports {name}, which snapport does not grant (plugins get only {WIT_PACKAGE}/host, types, grpc and tools, of the version they export)"));
            }
        }
        Ok(version.to_string())
    }

    /// Starts an instance of `plugin` for a pool with these grants and limits.
    pub fn instantiate(
        &self,
        plugin: Arc<Plugin>,
        pool: &str,
        grants: Grants,
        limits: Limits,
        logger: Option<Logger>,
    ) -> Instance {
        Instance {
            engine: self.engine.clone(),
            plugin,
            pool: pool.to_string(),
            grants: Arc::new(grants),
            limits,
            logger,
            live: None,
            generation: 0,
        }
    }
}

/// A validated, compiled plugin component.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    /// Hex SHA-256 of the component file.
    pub digest: String,
    pub size: u64,
    /// The version of the WIT package it was built against (it exports and imports).
    pub wit_version: String,
    pre: bindings::BackendPluginPre<State>,
}

struct Live {
    store: Store<State>,
    bindings: bindings::BackendPlugin,
}

/// One pool's running plugin. Calls run under the pool's limits; after a trap the
/// instance is discarded and the next call starts a fresh one.
pub struct Instance {
    engine: Engine,
    plugin: Arc<Plugin>,
    pool: String,
    grants: Arc<Grants>,
    limits: Limits,
    logger: Option<Logger>,
    live: Option<Live>,
    /// Bumped at each fresh instance, so stale resource handles are never used.
    generation: u64,
}

fn printable_labels(labels: &mut [wit::Label]) {
    for l in labels {
        l.key = printable(&l.key, MAX_TEXT);
        l.value = printable(&l.value, MAX_TEXT);
    }
}

/// `v` with its free-form text made printable (a checked name is printable already).
fn printable_volume(mut v: VolumeInfo) -> VolumeInfo {
    v.name = printable(&v.name, MAX_TEXT);
    v.format = printable(&v.format, MAX_TEXT);
    v.parent = v.parent.map(|p| printable(&p, MAX_TEXT));
    printable_labels(&mut v.labels);
    v
}

fn printable_snapshot(mut s: SnapshotInfo) -> SnapshotInfo {
    s.name = printable(&s.name, MAX_TEXT);
    s.volume = printable(&s.volume, MAX_TEXT);
    s.id = printable(&s.id, MAX_TEXT);
    s.parent = s.parent.map(|p| printable(&p, MAX_TEXT));
    printable_labels(&mut s.labels);
    s
}

/// Entries of a listing left out for their names: how many, and the first with why.
#[derive(Default)]
struct LeftOut {
    count: usize,
    first: Option<(String, &'static str)>,
}

impl LeftOut {
    fn add(&mut self, name: &str, why: &'static str) {
        self.count += 1;
        self.first
            .get_or_insert_with(|| (printable(name, 100), why));
    }
}

fn backend_error(e: BackendError) -> (BackendErrorKind, String) {
    use BackendError as B;
    use BackendErrorKind as K;
    match e {
        B::NotFound(m) => (K::NotFound, m),
        B::InvalidArgument(m) => (K::InvalidArgument, m),
        B::Unsupported(m) => (K::Unsupported, m),
        B::PermissionDenied(m) => (K::PermissionDenied, m),
        B::OutOfRange(m) => (K::OutOfRange, m),
        B::Corrupt(m) => (K::Corrupt, m),
        B::Busy(m) => (K::Busy, m),
        B::Conflict(m) => (K::Conflict, m),
        B::Io(m) => (K::Io, m),
    }
}

impl Instance {
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    fn who(&self) -> String {
        format!("plugin {} (pool {})", self.plugin.name, self.pool)
    }

    fn live(&mut self) -> Result<&mut Live> {
        if self.live.is_none() {
            let state = State {
                devices: GrantedDevices::new(
                    Arc::clone(&self.grants),
                    self.plugin.name.clone(),
                    self.logger.clone(),
                ),
                limits: StoreLimitsBuilder::new()
                    .memory_size(self.limits.memory_bytes)
                    .trap_on_grow_failure(true)
                    .build(),
                grpc: None,
                panicked: None,
            };
            let mut store = Store::new(&self.engine, state);
            store.limiter(|s| &mut s.limits);
            store.set_epoch_deadline(self.ticks());
            store.epoch_deadline_trap();
            let bindings = self
                .plugin
                .pre
                .instantiate(&mut store)
                .map_err(|e| self.trap(e, "starting"))?;
            self.generation += 1;
            self.live = Some(Live { store, bindings });
        }
        Ok(self.live.as_mut().expect("just created"))
    }

    fn ticks(&self) -> u64 {
        (self.limits.call_timeout.as_millis() / TICK.as_millis()).max(1) as u64
    }

    /// Classifies a failed call and throws the instance away.
    fn trap(&mut self, e: wasmtime::Error, doing: &str) -> Error {
        let panicked = self
            .live
            .take()
            .and_then(|mut l| l.store.data_mut().panicked.take());
        let who = self.who();
        // The limiter refusing to grow memory (`trap_on_grow_failure`) is an error of
        // wasmtime's, not a `Trap`, with this text (wasmtime's runtime/limits.rs). Other
        // errors mention memory too ("pointer out of bounds of memory": a plugin's bad
        // answer), and are not the cap.
        let out_of_memory = e.downcast_ref::<Trap>().is_none()
            && format!("{e:#}").contains("forcing trap when growing memory");
        // The plugin said why before it trapped (its panic handler): that is the news. A
        // deadline or the memory cap is the host's doing, whatever the plugin said: the
        // operator must read which limit stopped it.
        if let Some(message) = panicked {
            if !out_of_memory && !matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
                return Error::new(
                    ErrorKind::Trap,
                    format!("{who} panicked while {doing}: {message}"),
                );
            }
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Error::new(
                ErrorKind::Timeout,
                format!(
                    "{who} ran past its CPU deadline of {:?} while {doing}; it was stopped",
                    self.limits.call_timeout
                ),
            ),
            Some(Trap::UnreachableCodeReached) => Error::new(
                ErrorKind::Trap,
                format!("{who} trapped while {doing} (it aborted: wasm `unreachable`)"),
            ),
            Some(t) => Error::new(ErrorKind::Trap, format!("{who} trapped while {doing}: {t}")),
            // wasmtime's own bound on what one call copies out of a plugin (a listing
            // of a million volumes ends here).
            None if format!("{e:#}").contains("too much data is being copied") => Error::new(
                ErrorKind::Misbehaved,
                format!(
                    "{who} answered more data than a host call takes while {doing}; it was stopped"
                ),
            ),
            None if out_of_memory => Error::new(
                ErrorKind::Trap,
                format!(
                    "{who} ran out of its memory limit of {} MiB while {doing}; it was stopped",
                    self.limits.memory_bytes >> 20
                ),
            ),
            None => Error::new(
                ErrorKind::Trap,
                format!("{who} failed while {doing}: {e:#}"),
            ),
        }
    }

    /// Runs one call into the plugin under the deadline; traps become errors, backend
    /// errors become `Backend` errors naming the plugin.
    fn call<R>(
        &mut self,
        doing: &str,
        f: impl FnOnce(
            &mut Store<State>,
            &guest::Guest,
        ) -> wasmtime::Result<std::result::Result<R, BackendError>>,
    ) -> Result<R> {
        let ticks = self.ticks();
        let live = self.live()?;
        live.store.set_epoch_deadline(ticks);
        // A message belongs to the trap of the call that said it, never to a later one.
        live.store.data_mut().panicked = None;
        let r = f(&mut live.store, live.bindings.snapport_backend_backend());
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(be)) => {
                let (kind, msg) = backend_error(be);
                Err(Error::new(
                    ErrorKind::Backend(kind),
                    format!("{}: {}", self.who(), printable(&msg, MAX_TEXT)),
                ))
            }
            Err(e) => Err(self.trap(e, doing)),
        }
    }

    pub fn info(&mut self) -> Result<PluginInfo> {
        let mut info = self.call("describing itself", |s, g| g.call_info(s).map(Ok))?;
        for text in [&mut info.name, &mut info.version, &mut info.description] {
            *text = printable(text, MAX_TEXT);
        }
        Ok(info)
    }

    /// The pool's volumes. A listing longer than [`MAX_LISTED`] is refused; volumes
    /// whose names are not plain names are left out, with one warning in the log (a file
    /// under an odd name in a pool's folder does not hide the others).
    pub fn list_volumes(&mut self) -> Result<Vec<VolumeInfo>> {
        let volumes = self.call("listing volumes", |s, g| g.call_list_volumes(s))?;
        self.check_count(volumes.len(), "volumes")?;
        let mut out = Vec::with_capacity(volumes.len());
        let mut bad = LeftOut::default();
        for v in volumes {
            match name::problem(&v.name) {
                None => out.push(printable_volume(v)),
                Some(why) => bad.add(&v.name, why),
            }
        }
        self.warn_left_out(bad, "volumes");
        Ok(out)
    }

    /// Snapshots of `volume`, or of all volumes; bounded and checked as volumes are.
    pub fn list_snapshots(&mut self, volume: Option<&str>) -> Result<Vec<SnapshotInfo>> {
        let snapshots = self.call("listing snapshots", |s, g| g.call_list_snapshots(s, volume))?;
        self.check_count(snapshots.len(), "snapshots")?;
        let mut out = Vec::with_capacity(snapshots.len());
        let mut bad = LeftOut::default();
        for s in snapshots {
            match name::problem(&s.name).or(name::problem(&s.volume)) {
                None => out.push(printable_snapshot(s)),
                Some(why) => bad.add(&format!("{}@{}", s.volume, s.name), why),
            }
        }
        self.warn_left_out(bad, "snapshots");
        Ok(out)
    }

    fn warn_left_out(&self, bad: LeftOut, what: &str) {
        if let (Some((first, why)), Some(log)) = (bad.first, &self.logger) {
            log(
                &self.plugin.name,
                LogLevel::Warn,
                &format!(
                    "pool {}: left out {} {what} whose names are not plain names, the first \"{first}\" ({why})",
                    self.pool, bad.count
                ),
            );
        }
    }

    fn check_count(&self, n: usize, what: &str) -> Result<()> {
        if n > MAX_LISTED {
            return Err(Error::new(
                ErrorKind::Misbehaved,
                format!(
                    "{} listed {n} {what}, more than the {MAX_LISTED} one listing may hold",
                    self.who()
                ),
            ));
        }
        Ok(())
    }

    /// `name`, which the plugin answered where the host asked for `asked`, must be that
    /// or a plain name: a backend may pick its own names (a CSI driver its volume IDs),
    /// and those become parts of paths and addresses.
    fn check_answered_name(&self, name: &str, asked: &str, what: &str) -> Result<()> {
        if name == asked {
            return Ok(());
        }
        match name::problem(name) {
            None => Ok(()),
            Some(why) => Err(Error::new(
                ErrorKind::Misbehaved,
                format!(
                    "{} answered {what} \"{}\", which is not a plain name ({why})",
                    self.who(),
                    printable(name, 100)
                ),
            )),
        }
    }

    /// The info of a volume the host opened or created as `asked`, checked.
    fn checked_volume(&self, v: VolumeInfo, asked: &str) -> Result<VolumeInfo> {
        self.check_answered_name(&v.name, asked, "a volume named")?;
        Ok(printable_volume(v))
    }

    /// Opens a volume (or one of its snapshots) for reading.
    pub fn open_volume(&mut self, volume: &str, snapshot: Option<&str>) -> Result<OpenVolume<'_>> {
        let handle = self.call("opening a volume", |s, g| {
            g.call_open_volume(s, volume, snapshot, Access::ReadOnly)
        })?;
        let info = self
            .call("describing a volume", |s, g| {
                g.volume().call_info(s, handle).map(Ok)
            })
            .and_then(|i| {
                let asked = match snapshot {
                    Some(snap) => format!("{volume}@{snap}"),
                    None => volume.to_string(),
                };
                self.checked_volume(i, &asked)
            });
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                self.drop_handle(handle, self.generation);
                return Err(e);
            }
        };
        let generation = self.generation;
        Ok(OpenVolume {
            instance: self,
            handle,
            info,
            generation,
        })
    }

    /// Opens an existing disk for writing in place. Images (`vi/`) are read-only once
    /// committed: refused here whatever the plugin would allow.
    pub fn open_volume_for_write(&mut self, volume: &str) -> Result<WritableVolume<'_>> {
        let handle = self.call("opening a volume for writing", |s, g| {
            g.call_open_volume(s, volume, None, Access::ReadWrite)
        })?;
        let generation = self.generation;
        let info = self
            .call("describing a volume", |s, g| {
                g.volume().call_info(s, handle).map(Ok)
            })
            .and_then(|i| self.checked_volume(i, volume));
        let refuse = match &info {
            Ok(i) if i.kind == VolumeKind::Image => Some(Error::new(
                ErrorKind::Backend(BackendErrorKind::PermissionDenied),
                format!("{}: vi/{volume} is a read-only image", self.who()),
            )),
            Ok(_) => None,
            Err(_) => None,
        };
        let info = match (info, refuse) {
            (Ok(i), None) => i,
            (Err(e), _) | (_, Some(e)) => {
                self.drop_handle(handle, generation);
                return Err(e);
            }
        };
        Ok(WritableVolume {
            instance: self,
            handle,
            info,
            generation,
            fresh: false,
            committed: false,
            lost: None,
        })
    }

    /// Creates volume `name` of `size` bytes, as a thin clone of `parent` when given, for
    /// the import engine to fill. It appears under its name only after a successful
    /// [`VolumeTarget::commit`]; dropped before, it is removed.
    pub fn create_volume(
        &mut self,
        name: &str,
        size: u64,
        kind: VolumeKind,
        parent: Option<&str>,
    ) -> Result<WritableVolume<'_>> {
        let handle = self.call("creating a volume", |s, g| {
            g.call_create_volume(s, name, size, kind, parent)
        })?;
        let generation = self.generation;
        let info = self
            .call("describing a volume", |s, g| {
                g.volume().call_info(s, handle).map(Ok)
            })
            .and_then(|i| self.checked_volume(i, name));
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                self.drop_handle(handle, generation);
                self.discard_staged();
                return Err(e);
            }
        };
        // A backend may round up to its granularity (qcow2: whole 512-byte sectors, as
        // QEMU reads them; `create-volume`). A volume larger than what it is made from
        // would not be what was verified, so such a size is refused here, before a byte
        // is written; a backend that rounds down or further than 64 KiB breaks the contract.
        if info.size != size {
            self.drop_handle(handle, generation);
            self.discard_staged();
            return Err(self.size_refused(name, size, info.size));
        }
        // A backend whose new volumes hold old bytes says so (see `create-volume`).
        let unzeroed = info
            .labels
            .iter()
            .any(|l| l.key == "unzeroed" && l.value == "true");
        Ok(WritableVolume {
            instance: self,
            handle,
            info,
            generation,
            fresh: parent.is_none() && !unzeroed,
            committed: false,
            lost: None,
        })
    }

    /// Why volume `name` of `size` bytes cannot be made when the plugin made it `made`
    /// bytes: the pool's granularity (the smallest power of two that rounds `size` up to
    /// `made`), or a broken contract.
    fn size_refused(&self, name: &str, size: u64, made: u64) -> Error {
        let granularity = (1..=16)
            .map(|b| 1u64 << b)
            .find(|g| made > size && size.checked_next_multiple_of(*g) == Some(made));
        match granularity {
            Some(g) => Error::new(
                ErrorKind::Backend(BackendErrorKind::InvalidArgument),
                format!(
                    "the source is {size} bytes; pool {} stores volumes in multiples of {g} bytes, so {name} would be {made} bytes, not the bytes verified: pad the source (or --size) to a multiple of {g} or use a raw pool",
                    self.pool
                ),
            ),
            None => Error::new(
                ErrorKind::Backend(BackendErrorKind::Io),
                format!(
                    "{} created {name} with {made} bytes where {size} were asked for",
                    self.who()
                ),
            ),
        }
    }

    /// Deletes volume `name`.
    pub fn delete_volume(&mut self, name: &str) -> Result<()> {
        self.call("deleting a volume", |s, g| g.call_delete_volume(s, name))
    }

    /// Whether another process has `volume` open the way QEMU marks its images (a
    /// running VM, `qemu-img`, `qemu-nbd`): what makes a snapshot taken now only
    /// crash-consistent, unless the guest is frozen.
    pub fn volume_in_use(&mut self, volume: &str) -> Result<bool> {
        let open = self.open_volume(volume, None)?;
        // Tested while the volume is open, and nothing of it kept afterwards: a plugin may
        // have to close its devices to give the volume back (a CSI volume is unpublished
        // only when no descriptor holds it).
        let busy = open.in_use_by_others();
        drop(open);
        busy
    }

    /// Throws the running instance away: the next call starts a fresh one, which opens
    /// the pool's files anew. For after another process changed them (a running QEMU
    /// took a snapshot): what the plugin read before, sizes included, is stale.
    pub fn restart(&mut self) {
        self.live = None;
    }

    /// Takes snapshot `name` of `volume`, dated `created_unix_ms`.
    pub fn create_snapshot(
        &mut self,
        volume: &str,
        name: &str,
        created_unix_ms: u64,
    ) -> Result<SnapshotInfo> {
        let made = self.call("creating a snapshot", |s, g| {
            g.call_create_snapshot(s, volume, name, created_unix_ms)
        })?;
        self.check_answered_name(&made.name, name, "a snapshot named")?;
        self.check_answered_name(&made.volume, volume, "a snapshot of a volume named")?;
        Ok(printable_snapshot(made))
    }

    /// Deletes snapshot `name` of `volume`.
    pub fn delete_snapshot(&mut self, volume: &str, name: &str) -> Result<()> {
        self.call("deleting a snapshot", |s, g| {
            g.call_delete_snapshot(s, volume, name)
        })
    }

    /// Makes `volume`'s content that of its snapshot `name`.
    pub fn restore_snapshot(&mut self, volume: &str, name: &str) -> Result<()> {
        self.call("restoring a snapshot", |s, g| {
            g.call_restore_snapshot(s, volume, name)
        })
    }

    /// Removes files created by this instance and never published.
    fn discard_staged(&mut self) {
        if let Some(live) = &mut self.live {
            live.store.data_mut().devices.discard_staged();
        }
    }

    fn drop_handle(&mut self, handle: ResourceAny, generation: u64) {
        if generation == self.generation {
            if let Some(live) = &mut self.live {
                let _ = handle.resource_drop(&mut live.store);
            }
        }
    }

    /// The device the plugin opened as `id`, in the current instance.
    fn device(&self, id: u32) -> Option<Arc<Device>> {
        self.live
            .as_ref()
            .and_then(|l| l.store.data().devices.get(id))
    }
}

/// A volume open in a plugin: the engine's [`VolumeSource`].
pub struct OpenVolume<'a> {
    instance: &'a mut Instance,
    handle: ResourceAny,
    pub info: VolumeInfo,
    generation: u64,
}

impl Drop for OpenVolume<'_> {
    fn drop(&mut self) {
        self.instance.drop_handle(self.handle, self.generation);
    }
}

impl OpenVolume<'_> {
    /// Whether another process holds a lock on one of the devices behind this volume
    /// (locks this instance took itself are not somebody else's use).
    fn in_use_by_others(&self) -> Result<bool> {
        let Some(live) = self.instance.live.as_ref() else {
            return Ok(false);
        };
        let granted = &live.store.data().devices;
        for device in granted.all() {
            if granted.held_for_writing(&device.file) {
                continue;
            }
            let busy = locks::in_use(&device.file).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("testing the locks of {}: {e}", device.name),
                )
            })?;
            if busy {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The devices the plugin has opened so far (those behind this volume among them):
    /// what identifies the bytes it reads, for a validator such as an HTTP ETag.
    pub fn devices(&self) -> Vec<Arc<Device>> {
        self.instance
            .live
            .as_ref()
            .map(|l| l.store.data().devices.all())
            .unwrap_or_default()
    }

    /// The ranges of this volume that may differ from its snapshot `base`, from the
    /// backend's metadata (`changed-extents`), merged. Only the ranges are taken: the
    /// bytes are read through the checked map like any export. A page that runs
    /// backwards, overlaps, leaves the volume or does not move on is refused.
    pub fn changed_ranges(&mut self, base: &str) -> Result<Vec<(u64, u64)>> {
        let size = self.info.size;
        let handle = self.handle;
        let who = format!("{} for {}", self.instance.who(), self.info.name);
        let lie = |what: String| {
            Error::new(
                ErrorKind::Trap,
                format!("{who} returned bad changed extents: {what}"),
            )
        };
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut start = 0u64;
        loop {
            self.check_generation()?;
            let page = self.instance.call("listing changed extents", |s, g| {
                g.volume()
                    .call_changed_extents(s, handle, base, start, PAGE_EXTENTS)
            })?;
            if page.extents.len() > PAGE_EXTENTS as usize {
                return Err(lie(format!(
                    "{} extents where {PAGE_EXTENTS} were asked for",
                    page.extents.len()
                )));
            }
            let mut pos = start;
            for e in &page.extents {
                let end = e.offset.checked_add(e.length).filter(|&end| end <= size);
                match end {
                    _ if e.length == 0 => {
                        return Err(lie(format!("an empty extent at {}", e.offset)))
                    }
                    _ if e.offset < pos => {
                        return Err(lie(format!(
                            "extents overlap or run backwards at {} (expected {pos} or later)",
                            e.offset
                        )))
                    }
                    None => {
                        return Err(lie(format!(
                            "extent at {} of {} bytes runs past the volume's end ({size})",
                            e.offset, e.length
                        )))
                    }
                    Some(end) => {
                        match out.last_mut() {
                            Some(last) if last.0 + last.1 == e.offset => last.1 += e.length,
                            _ => out.push((e.offset, e.length)),
                        }
                        pos = end;
                    }
                }
            }
            match page.next_offset {
                None => return Ok(out),
                Some(n) if n <= start || n < pos || n >= size => {
                    return Err(lie(format!(
                        "next page at {n} after a page from {start} to {pos} of {size} bytes"
                    )))
                }
                Some(n) => start = n,
            }
        }
    }

    fn check_generation(&self) -> Result<()> {
        if self.generation != self.instance.generation || self.instance.live.is_none() {
            return Err(Error::new(
                ErrorKind::Trap,
                format!(
                    "{} was restarted after a failure; open the volume again",
                    self.instance.who()
                ),
            ));
        }
        Ok(())
    }
}

/// A volume being written: the import engine's [`VolumeTarget`]. The plugin says where
/// bytes go; the host checks every answer (the ranges must cover exactly what was asked,
/// on devices the plugin holds read-write) and writes the data itself.
pub struct WritableVolume<'a> {
    instance: &'a mut Instance,
    handle: ResourceAny,
    pub info: VolumeInfo,
    generation: u64,
    /// Created without a parent: unwritten ranges read as zeros already.
    fresh: bool,
    committed: bool,
    /// The failure that cost the plugin its instance, repeated to later callers (the
    /// import's other workers) so every error says what happened.
    lost: Option<String>,
}

impl Drop for WritableVolume<'_> {
    fn drop(&mut self) {
        self.instance.drop_handle(self.handle, self.generation);
        if !self.committed {
            self.instance.discard_staged();
        }
    }
}

impl WritableVolume<'_> {
    fn plugin_error(&self, what: String) -> snapport_core::Error {
        snapport_core::Error::new(
            snapport_core::ErrorKind::Plugin,
            format!("{} {what}", self.describe()),
        )
    }

    fn check_generation(&self) -> Result<()> {
        if self.generation != self.instance.generation || self.instance.live.is_none() {
            return Err(Error::new(
                ErrorKind::Trap,
                match &self.lost {
                    Some(why) => format!("the volume being written is lost: {why}"),
                    None => format!(
                        "{} was restarted after a failure; the volume being written is lost",
                        self.instance.who()
                    ),
                },
            ));
        }
        Ok(())
    }

    /// Remembers a failure that threw the instance away.
    fn note<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if self.instance.live.is_none() && self.lost.is_none() {
                self.lost = Some(e.to_string());
            }
        }
        r
    }
}

impl VolumeTarget for WritableVolume<'_> {
    fn size(&self) -> u64 {
        self.info.size
    }

    fn needs_zeroing(&self) -> bool {
        !self.fresh
    }

    fn allocate(
        &mut self,
        offset: u64,
        length: u64,
        zero: bool,
    ) -> snapport_core::Result<Vec<Extent>> {
        self.check_generation()?;
        let handle = self.handle;
        let extents = self.instance.call("allocating", |s, g| {
            g.volume().call_allocate(s, handle, offset, length, zero)
        });
        let extents = self.note(extents)?;
        let mut pos = offset;
        let mut out = Vec::with_capacity(extents.len());
        for e in extents.into_iter().map(convert_extent) {
            let end = e.offset.checked_add(e.length);
            if e.offset != pos || e.length == 0 || end.is_none_or(|end| end > offset + length) {
                return Err(self.plugin_error(format!(
                    "answered [{}, +{}) for an allocation of [{offset}, +{length})",
                    e.offset, e.length
                )));
            }
            match e.location {
                Location::Data { device, offset: at } => {
                    let writable = self
                        .instance
                        .live
                        .as_ref()
                        .is_some_and(|l| l.store.data().devices.is_writable(device));
                    if !writable || at.checked_add(e.length).is_none() {
                        return Err(self.plugin_error(format!(
                            "told the host to write to device {device}, which it does not hold read-write"
                        )));
                    }
                }
                Location::Zero if zero => {}
                _ => {
                    return Err(self.plugin_error(format!(
                        "answered an allocation of [{offset}, +{length}) with neither data nor (asked-for) zeros"
                    )))
                }
            }
            pos += e.length;
            out.push(e);
        }
        if pos != offset + length {
            return Err(self.plugin_error(format!(
                "left [{pos}, {}) of an allocation unanswered",
                offset + length
            )));
        }
        Ok(out)
    }

    fn device(&self, id: u32) -> snapport_core::Result<Arc<Device>> {
        self.instance
            .device(id)
            .ok_or_else(|| self.plugin_error(format!("named device {id}, which it never opened")))
    }

    fn commit(&mut self) -> snapport_core::Result<()> {
        self.check_generation()?;
        let handle = self.handle;
        let r = self
            .instance
            .call("committing", |s, g| g.volume().call_commit(s, handle));
        self.note(r)?;
        self.committed = true;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} for new volume {}", self.instance.who(), self.info.name)
    }
}

fn convert_extent(e: wit::Extent) -> Extent {
    let location = match e.location {
        wit::Location::Data(d) => Location::Data {
            device: d.device,
            offset: d.offset,
        },
        wit::Location::Zero => Location::Zero,
        wit::Location::Unallocated => Location::Unallocated,
        wit::Location::Encoded(x) => Location::Encoded(Encoded {
            device: x.device,
            offset: x.offset,
            stored_length: x.stored_length,
            decoded_length: x.decoded_length,
            skip: x.skip,
            codec: x.codec,
        }),
    };
    Extent {
        offset: e.offset,
        length: e.length,
        location,
    }
}

impl VolumeSource for OpenVolume<'_> {
    fn size(&self) -> u64 {
        self.info.size
    }

    fn map_page(&mut self, start: u64) -> snapport_core::Result<ExtentPage> {
        self.check_generation()?;
        let handle = self.handle;
        let page = self.instance.call("mapping extents", |s, g| {
            g.volume().call_map_extents(s, handle, start, PAGE_EXTENTS)
        })?;
        if page.extents.len() > PAGE_EXTENTS as usize {
            return Err(snapport_core::Error::new(
                snapport_core::ErrorKind::Plugin,
                format!(
                    "{} returned {} extents where {PAGE_EXTENTS} were asked for",
                    self.describe(),
                    page.extents.len()
                ),
            ));
        }
        Ok(ExtentPage {
            extents: page.extents.into_iter().map(convert_extent).collect(),
            next_offset: page.next_offset,
        })
    }

    fn device(&self, id: u32) -> snapport_core::Result<Arc<Device>> {
        self.instance.device(id).ok_or_else(|| {
            snapport_core::Error::new(
                snapport_core::ErrorKind::Plugin,
                format!(
                    "{} named device {id}, which it never opened through a grant",
                    self.describe()
                ),
            )
        })
    }

    fn decode(
        &mut self,
        codec: u32,
        stored: &[u8],
        decoded_length: u32,
    ) -> snapport_core::Result<Vec<u8>> {
        self.check_generation()?;
        let handle = self.handle;
        Ok(self.instance.call("decoding", |s, g| {
            g.volume()
                .call_decode(s, handle, codec, stored, decoded_length)
        })?)
    }

    fn describe(&self) -> String {
        format!("{} for {}", self.instance.who(), self.info.name)
    }
}

// Host functions: each forwards to the grant checks in `grants`.
impl bindings::snapport::backend::types::Host for State {}

impl bindings::snapport::backend::host::Host for State {
    fn setting(&mut self, key: String) -> Option<String> {
        self.devices.setting(&key)
    }
    fn granted_devices(&mut self) -> Vec<wit::FileEntry> {
        self.devices.granted_devices()
    }
    fn list_files(&mut self) -> std::result::Result<Vec<wit::FileEntry>, BackendError> {
        self.devices.list_files()
    }
    fn open(
        &mut self,
        name: String,
        relative_to: Option<u32>,
        access: Access,
    ) -> std::result::Result<u32, BackendError> {
        self.devices.open(&name, relative_to, access)
    }
    fn close(&mut self, device: u32) {
        self.devices.close(device);
    }
    fn device_size(&mut self, device: u32) -> std::result::Result<u64, BackendError> {
        self.devices.device_size(device)
    }
    fn read_at(
        &mut self,
        device: u32,
        offset: u64,
        length: u32,
    ) -> std::result::Result<Vec<u8>, BackendError> {
        self.devices.read_at(device, offset, length)
    }
    fn write_at(
        &mut self,
        device: u32,
        offset: u64,
        data: Vec<u8>,
    ) -> std::result::Result<(), BackendError> {
        self.devices.write_at(device, offset, &data)
    }
    fn set_size(&mut self, device: u32, size: u64) -> std::result::Result<(), BackendError> {
        self.devices.set_size(device, size)
    }
    fn flush(&mut self, device: u32) -> std::result::Result<(), BackendError> {
        self.devices.flush(device)
    }
    fn create_file(&mut self, name: String) -> std::result::Result<u32, BackendError> {
        self.devices.create_file(&name)
    }
    fn publish_file(&mut self, device: u32) -> std::result::Result<(), BackendError> {
        self.devices.publish_file(device)
    }
    fn remove_file(&mut self, name: String) -> std::result::Result<(), BackendError> {
        self.devices.remove_file(&name)
    }
    fn log(&mut self, level: LogLevel, message: String) {
        self.devices.log(level, &message)
    }
    // 0.1.2: folders as trees.
    fn granted_folders(&mut self) -> Vec<wit::GrantedFolder> {
        self.devices.granted_folders()
    }
    fn list_folder(
        &mut self,
        folder: u32,
        path: String,
    ) -> std::result::Result<Vec<wit::FolderEntry>, BackendError> {
        self.devices.list_folder(folder, &path)
    }
    fn open_in(
        &mut self,
        folder: u32,
        path: String,
        access: Access,
    ) -> std::result::Result<u32, BackendError> {
        self.devices.open_in(folder, &path, access)
    }
    fn create_folder(
        &mut self,
        folder: u32,
        path: String,
    ) -> std::result::Result<(), BackendError> {
        self.devices.create_folder(folder, &path)
    }
    fn create_file_in(
        &mut self,
        folder: u32,
        path: String,
    ) -> std::result::Result<u32, BackendError> {
        self.devices.create_file_in(folder, &path)
    }
    fn remove_in(&mut self, folder: u32, path: String) -> std::result::Result<(), BackendError> {
        self.devices.remove_in(folder, &path)
    }
    /// Kept (printable, cut) for the trap that follows: see [`Instance::trap`].
    fn panicked(&mut self, message: String) {
        self.panicked = Some(printable(&message, MAX_TEXT));
    }
}

/// The pool's tools: checked, run without a shell, logged.
impl bindings::snapport::backend::tools::Host for State {
    fn granted(&mut self, tool: String) -> bool {
        self.devices.grants().tools.contains_key(&tool)
    }

    fn run(
        &mut self,
        tool: String,
        args: Vec<String>,
    ) -> std::result::Result<bindings::snapport::backend::tools::ToolOutput, BackendError> {
        let Some(grant) = self.devices.grants().tools.get(&tool).cloned() else {
            return Err(BackendError::PermissionDenied(format!(
                "{tool}: this pool grants no such tool (tools.{tool} in the pool's configuration)"
            )));
        };
        tools::check_args(&tool, &grant, &args).map_err(BackendError::PermissionDenied)?;
        self.devices.log(
            LogLevel::Info,
            &format!("running {}", tools::command_line(&grant, &args)),
        );
        let r = tools::run(&tool, &grant, &args).map_err(BackendError::Io)?;
        Ok(bindings::snapport::backend::tools::ToolOutput {
            status: r.status,
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }
}

impl State {
    /// The client for the pool's endpoint; `permission-denied` when it grants none.
    fn grpc(&mut self, method: &str) -> std::result::Result<&mut grpc::GrpcClient, BackendError> {
        if self.grpc.is_none() {
            let Some(endpoint) = self.devices.grants().grpc_endpoint.clone() else {
                return Err(BackendError::PermissionDenied(format!(
                    "{method}: this pool grants no gRPC endpoint"
                )));
            };
            let endpoint =
                grpc::parse_endpoint(&endpoint).map_err(BackendError::PermissionDenied)?;
            self.grpc = Some(grpc::GrpcClient::new(endpoint).map_err(BackendError::Io)?);
        }
        Ok(self.grpc.as_mut().expect("set above"))
    }
}

fn grpc_error(e: grpc::CallError) -> BackendError {
    match e {
        grpc::CallError::Denied(s) => BackendError::PermissionDenied(s),
        grpc::CallError::Failed(s) => BackendError::Io(s),
    }
}

/// Calls on the pool's one gRPC endpoint (see [`grpc`]).
impl bindings::snapport::backend::grpc::Host for State {
    fn unary(
        &mut self,
        method: String,
        request: Vec<u8>,
    ) -> std::result::Result<Vec<u8>, BackendError> {
        self.grpc(&method)?
            .unary(&method, &request)
            .map_err(grpc_error)
    }
    fn start_stream(
        &mut self,
        method: String,
        request: Vec<u8>,
    ) -> std::result::Result<u32, BackendError> {
        self.grpc(&method)?
            .start_stream(&method, &request)
            .map_err(grpc_error)
    }
    fn next_message(&mut self, id: u32) -> std::result::Result<Option<Vec<u8>>, BackendError> {
        self.grpc("next-message")?
            .next_message(id)
            .map_err(grpc_error)
    }
    fn close_stream(&mut self, id: u32) {
        if let Some(c) = self.grpc.as_mut() {
            c.close_stream(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_of_the_same_series_and_not_newer_are_supported() {
        for v in ["0.1.0", "0.1.1", "0.1.2"] {
            assert_eq!(supported_wit_version(v), Ok(()), "{v}");
        }
        for (v, why) in [
            ("0.1.3", "upgrade snapport"),
            ("0.2.0", "earlier versions of its series"),
            ("0.0.9", "earlier versions of its series"),
            ("1.1.0", "earlier versions of its series"),
            ("0.1", "not a version"),
            ("0.1.0-rc1", "not a version"),
            ("0.1.0.0", "not a version"),
        ] {
            let e = supported_wit_version(v).unwrap_err();
            assert!(e.contains(why) && e.contains(v), "{v}: {e}");
        }
    }

    #[test]
    fn files_that_are_not_components_are_named_for_what_they_are() {
        assert!(not_a_component(b"").unwrap().contains("empty"));
        assert!(not_a_component(b"#!/bin/sh\n")
            .unwrap()
            .contains("not a WebAssembly file"));
        let core = not_a_component(b"\0asm\x01\0\0\0").unwrap();
        assert!(
            core.contains("core WebAssembly module") && core.contains("wasm-tools component new")
        );
        assert_eq!(not_a_component(b"\0asm\x0d\0\x01\0"), None);
        // Too short to tell: wasmtime says what is wrong.
        assert_eq!(not_a_component(b"\0asm"), None);
    }

    /// A released WIT never changes: plugins in the field were built against these bytes.
    #[test]
    fn released_wit_versions_are_frozen() {
        let frozen = [
            (
                "v0.1.0",
                "8b23293ddf4b9e225f5c1ee3418bf434538d32c8e26a4b2922a6b237ff8a993d",
            ),
            (
                "v0.1.1",
                "b4a4b74ae373e877e4ee5bbcb7981cbe5040c3fd383ac25c3f6d602e5b9362c5",
            ),
        ];
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
        for (dir, sha256) in frozen {
            let text = std::fs::read(wit.join(dir).join("backend.wit")).unwrap();
            let version = dir.trim_start_matches('v');
            assert!(
                String::from_utf8_lossy(&text)
                    .contains(&format!("package {WIT_PACKAGE}@{version};")),
                "{dir}"
            );
            assert_eq!(
                hex::encode(Sha256::digest(&text)),
                sha256,
                "wit/{dir} was edited"
            );
            assert_eq!(supported_wit_version(version), Ok(()), "{dir}");
        }
        let current = std::fs::read_to_string(wit.join("backend.wit")).unwrap();
        assert!(current.contains(&format!("package {WIT_PACKAGE}@{WIT_VERSION};")));
    }
}
