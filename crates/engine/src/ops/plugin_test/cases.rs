//! The cases, in the order they run: load, known content written and read back,
//! snapshots, thin clones, listing, reading what is listed, robustness, what is not
//! declared, deleting. Each case is one [`CaseResult`]; a case that needs an earlier one's result
//! (a written volume) is skipped, saying so, when that one failed.

use super::content::{self, Fill, Keep, Layout, Run, UNIT};
use super::{CaseResult, Status};
use crate::Engine;
use snapport_core::extent::{CheckedMap, Extent, Location, VolumeSource};
use snapport_core::import::VolumeTarget;
use snapport_host::bindings::snapport::backend::types::LogLevel;
use snapport_host::CAPABILITIES;
use snapport_host::{
    BackendErrorKind, Capabilities, ErrorKind, Grants, Instance, Limits, Logger, Plugin,
    VolumeInfo, VolumeKind, WritableVolume,
};
use std::sync::{Arc, Mutex};

/// At most this many listed volumes (and as many snapshots) are read: the suite checks a
/// contract, it is not a scrub of the operator's pool.
const MAX_READ: usize = 32;
/// Extents the host asks for per `map-extents` call (the host's page).
const MAP_PAGE: u32 = 4096;
/// Data bytes read per listed volume at most; the map is walked whole regardless.
const READ_CAP: u64 = 256 << 20;

/// Who the plugin says it is, for the report.
pub(super) struct Info {
    pub name: String,
    pub version: String,
    pub wit: String,
    pub capabilities: Vec<&'static str>,
}

/// How a case ends when it does not pass.
enum Stop {
    Fail(String),
    Skip(String),
}

type Outcome = std::result::Result<String, Stop>;

fn fail(why: impl Into<String>) -> Stop {
    Stop::Fail(why.into())
}

fn skip(why: impl Into<String>) -> Stop {
    Stop::Skip(why.into())
}

/// The WIT's name of an error kind, as an author reads it in `backend.wit`.
fn kind_name(kind: ErrorKind) -> String {
    use BackendErrorKind as B;
    match kind {
        ErrorKind::Backend(b) => match b {
            B::NotFound => "not-found",
            B::InvalidArgument => "invalid-argument",
            B::Unsupported => "unsupported",
            B::PermissionDenied => "permission-denied",
            B::OutOfRange => "out-of-range",
            B::Corrupt => "corrupt",
            B::Busy => "busy",
            B::Conflict => "conflict",
            B::Io => "io",
        }
        .into(),
        ErrorKind::Trap => "a trap".into(),
        ErrorKind::Timeout => "a timeout".into(),
        ErrorKind::Misbehaved => "an answer the host refused".into(),
        other => format!("{other:?}"),
    }
}

/// Whether `message` says something after the host's prefix `who`.
fn has_text(who: &str, message: &str) -> bool {
    let rest = message
        .strip_prefix(who)
        .map(|r| r.trim_start_matches(':'))
        .unwrap_or(message);
    !rest.trim().is_empty()
}

/// Notes in `errors` an error the plugin answered to a call that was meant to work.
fn noted(errors: &mut Vec<(String, String)>, asked: &str, e: snapport_host::Error) -> Stop {
    errors.push((asked.to_string(), e.message.clone()));
    fail(format!("{asked}: {}", e.message))
}

/// What a create may answer that the pool's grants can explain: no tool to create with.
const CREATE_REFUSALS: &[BackendErrorKind] = &[
    BackendErrorKind::PermissionDenied,
    BackendErrorKind::Unsupported,
];

/// As [`noted`], but an error of a kind in `allowed`, with words, is a skip: the pool's
/// grants (no tool to create with: `unsupported` or `permission-denied`, as the WIT
/// says) or the volume (an LVM linear LV has no snapshots of its kind) do not allow the
/// case, and the plugin said so. Not in the suite's own `scratch` pool: it grants a
/// writable folder, all a plugin needs, so there a declared capability answered
/// `unsupported` or `permission-denied` fails (else refusing everything would pass).
fn refused(
    errors: &mut Vec<(String, String)>,
    asked: &str,
    e: snapport_host::Error,
    allowed: &[BackendErrorKind],
    scratch: bool,
) -> Stop {
    let words = e.message.clone();
    let kind = e.kind;
    let stop = noted(errors, asked, e);
    let excused = |k: &BackendErrorKind| {
        allowed.contains(k)
            && !(scratch
                && matches!(
                    k,
                    BackendErrorKind::Unsupported | BackendErrorKind::PermissionDenied
                ))
    };
    match kind {
        ErrorKind::Backend(k) if excused(&k) && !words.trim().is_empty() => {
            skip(format!("{asked}: {} ({words})", kind_name(kind)))
        }
        _ => stop,
    }
}

/// A volume the suite wrote, with what it must hold.
struct Written {
    name: String,
    layout: Layout,
    expected: Vec<u8>,
}

pub(super) struct Suite<'a> {
    engine: &'a Engine,
    plugin: Arc<Plugin>,
    instance: Instance,
    /// The prefix the host puts before the plugin's own error texts.
    who: String,
    caps: Capabilities,
    info: Option<Info>,
    /// The suite's own pool: write freely, nothing to clean.
    scratch: bool,
    writable: bool,
    tag: String,
    cases: Vec<CaseResult>,
    on_case: &'a mut dyn FnMut(&CaseResult),
    /// Every error the plugin answered (what was asked, the text), for `robust.error-text`.
    errors: Vec<(String, String)>,
    /// Volumes made here and not yet removed.
    created: Vec<String>,
    /// The host's warnings about listed names it left out.
    left_out: Arc<Mutex<Vec<String>>>,
    /// The volumes listed at the start.
    volumes: Vec<VolumeInfo>,
    main: Option<Written>,
}

impl<'a> Suite<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        engine: &'a Engine,
        plugin: Arc<Plugin>,
        pool: &str,
        grants: Grants,
        limits: Limits,
        logger: Option<Logger>,
        scratch: bool,
        on_case: &'a mut dyn FnMut(&CaseResult),
    ) -> Suite<'a> {
        let left_out = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&left_out);
        let wrapped: Logger = Arc::new(move |plugin: &str, level: LogLevel, line: &str| {
            if level == LogLevel::Warn && line.contains("left out") {
                seen.lock().expect("not poisoned").push(line.to_string());
            }
            if let Some(log) = &logger {
                log(plugin, level, line);
            }
        });
        let writable = grants.writable;
        let instance =
            engine
                .host
                .instantiate(Arc::clone(&plugin), pool, grants, limits, Some(wrapped));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        Suite {
            engine,
            who: format!("plugin {} (pool {pool})", plugin.name),
            plugin,
            instance,
            caps: Capabilities::empty(),
            info: None,
            scratch,
            writable,
            tag: format!("snapport-test-{:x}", (std::process::id() << 12) ^ nanos),
            cases: Vec::new(),
            on_case,
            errors: Vec::new(),
            created: Vec::new(),
            left_out,
            volumes: Vec::new(),
            main: None,
        }
    }

    /// The plugin's description and every case, once the run is over.
    pub(super) fn finish(self) -> (Info, Vec<CaseResult>) {
        if !self.scratch {
            crate::interrupt::clear_note();
        }
        let info = self.info.unwrap_or_else(|| Info {
            name: self.plugin.name.clone(),
            version: String::new(),
            wit: format!("{}@{}", snapport_host::WIT_PACKAGE, self.plugin.wit_version),
            capabilities: Vec::new(),
        });
        (info, self.cases)
    }

    /// Notes a volume made here, to remove afterwards.
    fn remember(&mut self, made: String) {
        self.created.push(made);
        self.tell_left();
    }

    /// Keeps the interruption line saying which volumes made in the operator's pool are
    /// still there: a signal ends the process before the suite could remove them (that
    /// takes the plugin), so the operator at least learns their names.
    fn tell_left(&self) {
        if self.scratch {
            return;
        }
        if self.created.is_empty() {
            crate::interrupt::clear_note();
        } else {
            crate::interrupt::note(&format!(
                "plugin test made these volumes in the pool and did not remove them: {}",
                self.created.join(", ")
            ));
        }
    }

    fn has(&self, c: Capabilities) -> bool {
        self.caps.contains(c)
    }

    fn case(&mut self, name: &'static str, f: impl FnOnce(&mut Self) -> Outcome) -> bool {
        // An instance lives for one operation (the WIT's contract): each case starts a
        // fresh one, as each command of the CLI would.
        self.instance.restart();
        let (status, detail) = match f(self) {
            Ok(d) => (Status::Ok, d),
            Err(Stop::Fail(d)) => (Status::Fail, d),
            Err(Stop::Skip(d)) => (Status::Skip, d),
        };
        self.tell_left();
        let passed = status == Status::Ok;
        let result = CaseResult {
            name,
            status,
            detail,
        };
        (self.on_case)(&result);
        self.cases.push(result);
        passed
    }

    /// Reports `names` as skipped for `why`.
    fn skip_all(&mut self, names: &[&'static str], why: &str) {
        for n in names {
            self.case(n, |_| Err(skip(why)));
        }
    }

    /// Checks an answer that must be one of the errors `want`, with text.
    fn expect_error<T>(
        &mut self,
        asked: &str,
        r: snapport_host::Result<T>,
        want: &[BackendErrorKind],
    ) -> Outcome {
        let e = match r {
            Ok(_) => return Err(fail(format!("{asked}: answered success"))),
            Err(e) => e,
        };
        self.errors.push((asked.to_string(), e.message.clone()));
        let names = want
            .iter()
            .map(|k| kind_name(ErrorKind::Backend(*k)))
            .collect::<Vec<_>>()
            .join(" or ");
        match e.kind {
            ErrorKind::Backend(k) if want.contains(&k) => {
                if has_text(&self.who, &e.message) {
                    Ok(format!("{asked}: {}", kind_name(e.kind)))
                } else {
                    Err(fail(format!(
                        "{asked}: answered {} without text (an error must say what went wrong, in words)",
                        kind_name(e.kind)
                    )))
                }
            }
            kind => Err(fail(format!(
                "{asked}: answered {} where the WIT says {names}: {}",
                kind_name(kind),
                e.message
            ))),
        }
    }

    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
    }

    pub(super) fn run(&mut self) {
        self.load();
        if self.info.is_none() {
            return;
        }
        // Writing first: in a scratch pool, what the suite wrote is then what is listed
        // and read.
        self.writing();
        self.snapshots();
        self.clones();
        self.listing();
        self.reading();
        self.robustness();
        self.unsupported();
        self.deleting();
        self.case("robust.error-text", |s| {
            let silent: Vec<&str> = s
                .errors
                .iter()
                .filter(|(_, m)| !has_text(&s.who, m))
                .map(|(a, _)| a.as_str())
                .collect();
            match silent.first() {
                None => Ok(format!(
                    "{} errors answered, each with text",
                    s.errors.len()
                )),
                Some(first) => Err(fail(format!(
                    "{} of {} errors carried no text, the first answering {first}",
                    silent.len(),
                    s.errors.len()
                ))),
            }
        });
    }

    fn load(&mut self) {
        let plugin = Arc::clone(&self.plugin);
        self.case("load.component", |_| {
            Ok(format!(
                "{}@{}, {} bytes, sha256 {}",
                snapport_host::WIT_PACKAGE,
                plugin.wit_version,
                plugin.size,
                plugin.digest
            ))
        });
        // `info` must answer with no grants at all: `plugin list` asks it that way.
        let engine = self.engine;
        self.case("load.info", |s| {
            let mut bare = engine.host.instantiate(
                Arc::clone(&plugin),
                "-",
                Grants::default(),
                Limits::default(),
                None,
            );
            bare.info().map_err(|e| {
                fail(format!(
                    "info with no grants (as `plugin list` asks): {}",
                    e.message
                ))
            })?;
            // What the plugin declares on the pool's grants and settings is what the
            // host goes by when it runs there.
            let info = s.instance.info().map_err(|e| fail(e.message))?;
            for (what, text) in [("name", &info.name), ("version", &info.version)] {
                if text.trim().is_empty() {
                    return Err(fail(format!("info gives an empty {what}")));
                }
            }
            if info.description.trim().is_empty() {
                return Err(fail(
                    "info gives an empty description: say what the plugin serves",
                ));
            }
            s.caps = info.capabilities;
            let names: Vec<&'static str> = CAPABILITIES
                .iter()
                .filter(|(c, _)| info.capabilities.contains(*c))
                .map(|(_, n)| *n)
                .collect();
            let detail = format!("{} {}: {}", info.name, info.version, info.description);
            s.info = Some(Info {
                name: info.name,
                version: info.version,
                wit: format!("{}@{}", snapport_host::WIT_PACKAGE, plugin.wit_version),
                capabilities: names,
            });
            Ok(detail)
        });
        if self.info.is_none() {
            return;
        }
        self.case("load.capabilities", |s| {
            let c = s.caps;
            let needs = [
                (Capabilities::WRITE, Capabilities::READ),
                (Capabilities::EXTENTS, Capabilities::READ),
                (Capabilities::ZERO, Capabilities::WRITE),
                (Capabilities::TRIM, Capabilities::WRITE),
                (Capabilities::VOLUME_CREATE, Capabilities::WRITE),
                (Capabilities::THIN_CLONE, Capabilities::VOLUME_CREATE),
                (Capabilities::CHANGED_BLOCKS, Capabilities::READ),
            ];
            let name = |f: Capabilities| {
                CAPABILITIES
                    .iter()
                    .find(|(x, _)| *x == f)
                    .map_or("?", |(_, n)| *n)
            };
            if !c.contains(Capabilities::READ) {
                return Err(fail(
                    "does not declare read: the host can do nothing with it",
                ));
            }
            for (has, needs) in needs {
                if c.contains(has) && !c.contains(needs) {
                    return Err(fail(format!(
                        "declares {} without {}",
                        name(has),
                        name(needs)
                    )));
                }
            }
            Ok(s.info
                .as_ref()
                .map(|i| i.capabilities.join(","))
                .unwrap_or_default())
        });
    }

    fn listing(&mut self) {
        self.case("list.volumes", |s| {
            let volumes = s
                .instance
                .list_volumes()
                .map_err(|e| noted(&mut s.errors, "list-volumes", e))?;
            if let Some(line) = s.left_out.lock().expect("not poisoned").first() {
                return Err(fail(format!(
                    "listed names that are not plain names: {line}"
                )));
            }
            let mut names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
            names.sort();
            if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                return Err(fail(format!("lists volume {} twice", w[0])));
            }
            if let Some(v) = volumes.iter().find(|v| v.format.trim().is_empty()) {
                return Err(fail(format!("volume {} has an empty format", v.name)));
            }
            let n = volumes.len();
            s.volumes = volumes;
            Ok(format!("{n} volumes"))
        });
        self.case("list.snapshots", |s| {
            let all = s
                .instance
                .list_snapshots(None)
                .map_err(|e| noted(&mut s.errors, "list-snapshots", e))?;
            let mut keys: Vec<(&str, &str)> =
                all.iter().map(|x| (x.volume.as_str(), x.name.as_str())).collect();
            keys.sort();
            if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
                return Err(fail(format!("lists snapshot {}@{} twice", w[0].0, w[0].1)));
            }
            if let Some(x) = all
                .iter()
                .find(|x| !s.volumes.iter().any(|v| v.name == x.volume))
            {
                return Err(fail(format!(
                    "snapshot {}@{} belongs to no listed volume",
                    x.volume, x.name
                )));
            }
            let mut volumes: Vec<String> = all.iter().map(|x| x.volume.clone()).collect();
            volumes.dedup();
            for v in volumes.iter().take(MAX_READ) {
                let mut one: Vec<String> = s
                    .instance
                    .list_snapshots(Some(v))
                    .map_err(|e| noted(&mut s.errors, &format!("list-snapshots({v})"), e))?
                    .into_iter()
                    .map(|x| format!("{}@{}", x.volume, x.name))
                    .collect();
                let mut want: Vec<String> = all
                    .iter()
                    .filter(|x| x.volume == *v)
                    .map(|x| format!("{}@{}", x.volume, x.name))
                    .collect();
                one.sort();
                want.sort();
                if one != want {
                    return Err(fail(format!(
                        "list-snapshots({v}) gives {one:?}, but the whole listing has {want:?} for it"
                    )));
                }
            }
            Ok(format!("{} snapshots of {} volumes", all.len(), volumes.len()))
        });
    }

    /// Every listed volume and snapshot (up to [`MAX_READ`] of each): opens as listed,
    /// its map covers it, it reads whole, and twice the same.
    fn reading(&mut self) {
        let names = ["read.open", "read.map", "read.whole", "read.repeatable"];
        let mut targets: Vec<(String, Option<String>, u64, Option<VolumeKind>)> = self
            .volumes
            .iter()
            .take(MAX_READ)
            .map(|v| (v.name.clone(), None, v.size, Some(v.kind)))
            .collect();
        match self.instance.list_snapshots(None) {
            Ok(snaps) => targets.extend(
                snaps
                    .into_iter()
                    .take(MAX_READ)
                    .map(|x| (x.volume, Some(x.name), x.size, None)),
            ),
            Err(e) => {
                let _ = noted(&mut self.errors, "list-snapshots", e);
            }
        }
        if targets.is_empty() {
            // Every read case skipped would let a plugin that lists nothing and makes
            // nothing pass: the suite vouches for no read, so it says so as a failure.
            self.case("read.open", |s| {
                let why = s
                    .cannot_write()
                    .unwrap_or_else(|| "it could not make one".into());
                Err(fail(format!(
                    "nothing was read: the pool lists no volume or snapshot, and the suite made none ({why}); grant folders or devices that hold volumes (--folder, --device, -n POOL)"
                )))
            });
            self.skip_all(&names[1..], "nothing to read");
            return;
        }
        let mut problems: [Option<String>; 4] = Default::default();
        let (mut bytes, mut extents) = (0u64, 0u64);
        for (volume, snapshot, size, kind) in &targets {
            let address = match snapshot {
                Some(s) => format!("{volume}@{s}"),
                None => volume.clone(),
            };
            let first = self
                .instance
                .open_volume(volume, snapshot.as_deref())
                .map_err(|e| e.message)
                .and_then(|mut v| {
                    if v.info.size != *size || kind.is_some_and(|k| k != v.info.kind) {
                        return Err(format!(
                            "opens with size {} and kind {:?}, listed with {size} and {kind:?}",
                            v.info.size, v.info.kind
                        ));
                    }
                    Ok(content::read(&mut v, Keep::NOTHING, READ_CAP))
                });
            let first = match first {
                Err(why) => {
                    problems[0].get_or_insert(format!("{address}: {why}"));
                    continue;
                }
                Ok(Err(why)) => {
                    let slot = if why.contains("extent map") { 1 } else { 2 };
                    problems[slot].get_or_insert(format!("{address}: {why}"));
                    continue;
                }
                Ok(Ok(r)) => r,
            };
            bytes += first.data_bytes;
            extents += first.extents;
            let second = self
                .instance
                .open_volume(volume, snapshot.as_deref())
                .map_err(|e| e.message)
                .and_then(|mut v| content::read(&mut v, Keep::NOTHING, READ_CAP));
            match second {
                Err(why) => {
                    problems[3].get_or_insert(format!("{address}, read again: {why}"));
                }
                // Device numbers may change between opens (a CSI volume is attached
                // anew); what it reads may not.
                Ok(r) if r.digest != first.digest => {
                    problems[3].get_or_insert(format!(
                        "{address}: a second read gives other bytes or another map"
                    ));
                }
                Ok(_) => {}
            }
        }
        let details = [
            format!("{} volumes and snapshots open as listed", targets.len()),
            format!("{extents} extents cover every one in order, within their devices"),
            format!("{bytes} data bytes read"),
            "each read twice, equal".to_string(),
        ];
        for (i, name) in names.into_iter().enumerate() {
            let problem = problems[i].take();
            let detail = details[i].clone();
            self.case(name, |_| match problem {
                Some(p) => Err(fail(p)),
                None => Ok(detail),
            });
        }
    }

    /// Why the suite may not make volumes here, if it may not.
    fn cannot_write(&self) -> Option<String> {
        if !self.has(Capabilities::VOLUME_CREATE) {
            return Some("volume-create is not declared".into());
        }
        if !self.writable {
            return Some("the pool is the operator's: pass --writable to let the suite create snapport-test-* volumes".into());
        }
        if !self.scratch && !self.has(Capabilities::VOLUME_DELETE) {
            return Some("volume-delete is not declared, so volumes made in the operator's pool could not be removed".into());
        }
        None
    }

    /// Asks the plugin to create `name`; a refusal of a kind in `allowed` is a skip where
    /// the pool's grants explain it (see [`refused`]).
    fn create(
        &mut self,
        name: &str,
        size: u64,
        kind: VolumeKind,
        parent: Option<&str>,
        allowed: &[BackendErrorKind],
    ) -> std::result::Result<WritableVolume<'_>, Stop> {
        self.instance
            .create_volume(name, size, kind, parent)
            .map_err(|e| {
                let asked = format!("create-volume({name}, {size} bytes)");
                refused(&mut self.errors, &asked, e, allowed, self.scratch)
            })
    }

    /// Creates `name` with `layout` (a thin clone of `parent` when given, over whose
    /// content `base` the layout's runs are written), commits it, and returns its name.
    fn make(
        &mut self,
        name: &str,
        kind: VolumeKind,
        layout: &Layout,
        parent: Option<&str>,
        expected: &[u8],
    ) -> std::result::Result<String, Stop> {
        let mut w = self.create(name, layout.size, kind, parent, CREATE_REFUSALS)?;
        let made = w.info.name.clone();
        let zero_gaps = parent.is_none() && w.needs_zeroing();
        let mut layout = layout.clone();
        if zero_gaps {
            for (offset, length) in layout.unwritten() {
                layout.runs.push(Run {
                    offset,
                    length,
                    fill: Fill::Zeroed,
                });
            }
            layout.runs.sort_by_key(|r| r.offset);
        }
        let r = content::write(&mut w, &layout, expected)
            .and_then(|()| w.commit().map_err(|e| format!("commit: {e}")));
        drop(w);
        self.instance.restart();
        r.map_err(|why| fail(format!("{made}: {why}")))?;
        self.remember(made.clone());
        Ok(made)
    }

    /// Reads `name` (or its snapshot) whole and compares it with `want`; returns the map.
    fn read_back(
        &mut self,
        name: &str,
        snapshot: Option<&str>,
        want: &[u8],
    ) -> std::result::Result<Vec<Extent>, Stop> {
        let address = match snapshot {
            Some(s) => format!("{name}@{s}"),
            None => name.to_string(),
        };
        let r = match self.instance.open_volume(name, snapshot) {
            // What the suite wrote has the size it was made with; reading a size the
            // plugin made up would only take memory on its word.
            Ok(v) if v.info.size != want.len() as u64 => {
                return Err(fail(format!(
                    "{address} opens with {} bytes; it was written with {}",
                    v.info.size,
                    want.len()
                )))
            }
            Ok(mut v) => content::read(&mut v, Keep::ALL, u64::MAX),
            Err(e) => {
                return Err(noted(
                    &mut self.errors,
                    &format!("open-volume({address})"),
                    e,
                ))
            }
        };
        let r = r.map_err(|why| fail(format!("{address}: {why}")))?;
        let got = r.bytes.unwrap_or_default();
        match content::first_difference(&got, want) {
            None => Ok(r.map),
            Some(at) => {
                let how = r
                    .map
                    .iter()
                    .find(|e| e.offset <= at as u64 && (at as u64) < e.end())
                    .map(|e| format!(" (the map says {:?} there)", e.location))
                    .unwrap_or_default();
                Err(fail(format!(
                    "{address} reads other bytes than were written, first at offset {at}{how}"
                )))
            }
        }
    }

    fn listed(&mut self, name: &str) -> std::result::Result<Option<VolumeInfo>, Stop> {
        match self.instance.list_volumes() {
            Ok(vs) => Ok(vs.into_iter().find(|v| v.name == name)),
            Err(e) => Err(noted(&mut self.errors, "list-volumes", e)),
        }
    }

    fn writing(&mut self) {
        let names = [
            "write.create",
            "write.read-back",
            "extents.honest",
            "write.conflict",
            "write.uncommitted",
            "write.awkward-size",
            "extents.paging",
        ];
        if let Some(why) = self.cannot_write() {
            self.skip_all(&names, &why);
            return;
        }
        let layout = Layout::main(1, self.has(Capabilities::ZERO));
        let expected = layout.expected();
        let name = format!("{}-a", self.tag);
        let made = self.case("write.create", |s| {
            let made = s.make(&name, VolumeKind::Disk, &layout, None, &expected)?;
            let listed = s
                .listed(&made)?
                .ok_or_else(|| fail(format!("{made} is committed but not listed")))?;
            if listed.size != layout.size || listed.kind != VolumeKind::Disk {
                return Err(fail(format!(
                    "{made} is listed with size {} and kind {:?}; it was made with {} and disk",
                    listed.size, listed.kind, layout.size
                )));
            }
            s.main = Some(Written {
                name: made.clone(),
                layout: layout.clone(),
                expected: expected.clone(),
            });
            Ok(format!(
                "{made}: {} bytes in {} runs, committed, listed",
                layout.size,
                layout.runs.len()
            ))
        });
        if !made {
            self.skip_all(&names[1..3], "write.create failed");
        } else {
            self.case("write.read-back", |s| {
                let m = s.main.as_ref().expect("made");
                let (name, want) = (m.name.clone(), m.expected.clone());
                s.read_back(&name, None, &want)?;
                Ok(format!(
                    "{} bytes equal, holes and zero runs included",
                    want.len()
                ))
            });
            self.case("extents.honest", |s| {
                if !s.has(Capabilities::EXTENTS) {
                    return Err(skip("extents is not declared"));
                }
                let name = s.main.as_ref().expect("made").name.clone();
                let map = match s.instance.open_volume(&name, None) {
                    Ok(mut v) => content::read(&mut v, Keep::MAP, 0),
                    Err(e) => return Err(noted(&mut s.errors, &format!("open-volume({name})"), e)),
                }
                .map_err(|why| fail(format!("{name}: {why}")))?
                .map;
                let m = s.main.as_ref().expect("made");
                for e in &map {
                    if e.location.is_hole() {
                        let span = usize::try_from(e.offset)
                            .ok()
                            .zip(usize::try_from(e.end()).ok())
                            .and_then(|(from, to)| m.expected.get(from..to))
                            .ok_or_else(|| {
                                fail(format!(
                                    "the map of {name} reaches [{}, {}), past the {} bytes written",
                                    e.offset,
                                    e.end(),
                                    m.expected.len()
                                ))
                            })?;
                        if let Some(at) = span.iter().position(|b| *b != 0) {
                            return Err(fail(format!(
                                "the map calls [{}, {}) {:?}, but the suite wrote data there (first at {}): a plugin that declares extents must not call data a hole",
                                e.offset,
                                e.end(),
                                e.location,
                                e.offset + at as u64
                            )));
                        }
                    }
                }
                let unwritten: u64 = m.layout.unwritten().iter().map(|(_, l)| l).sum();
                let holes: u64 = map
                    .iter()
                    .filter(|e| e.location.is_hole())
                    .map(|e| e.length)
                    .sum();
                Ok(format!(
                    "no hole over data; {holes} of {unwritten} never-written bytes mapped as holes"
                ))
            });
        }
        self.case("write.conflict", |s| {
            let Some(m) = s.main.as_ref() else {
                return Err(skip("write.create failed"));
            };
            let (name, size) = (m.name.clone(), m.layout.size);
            if name != format!("{}-a", s.tag) {
                return Err(skip(format!(
                    "the backend names volumes itself (asked {}-a, made {name}): no name can be taken",
                    s.tag
                )));
            }
            let r = s
                .instance
                .create_volume(&name, size, VolumeKind::Disk, None)
                .map(drop);
            s.expect_error(
                &format!("create-volume({name}) again"),
                r,
                &[BackendErrorKind::Conflict],
            )
        });
        self.case("write.uncommitted", |s| {
            let name = format!("{}-uncommitted", s.tag);
            // Whole MiB: what any backend stores.
            let layout = Layout {
                size: 16 * UNIT,
                runs: vec![Run {
                    offset: 0,
                    length: UNIT,
                    fill: Fill::Pattern(9),
                }],
            };
            let expected = layout.expected();
            let made = {
                let mut w =
                    s.create(&name, layout.size, VolumeKind::Disk, None, CREATE_REFUSALS)?;
                let made = w.info.name.clone();
                content::write(&mut w, &layout, &expected)
                    .map_err(|why| fail(format!("{made}: {why}")))?;
                made
            };
            if s.listed(&made)?.is_some() {
                s.remember(made.clone());
                return Err(fail(format!(
                    "{made} was dropped uncommitted, but it is listed"
                )));
            }
            let r = s.instance.open_volume(&made, None).map(drop);
            s.expect_error(
                &format!("open-volume({made}) after dropping it uncommitted"),
                r,
                &[BackendErrorKind::NotFound],
            )
            .map(|_| format!("{made}: written, dropped uncommitted, not listed, not found"))
        });
        self.case("write.awkward-size", |s| {
            let layout = Layout::awkward(5);
            let expected = layout.expected();
            let name = format!("{}-odd", s.tag);
            // A pool of coarser granularity than 64 KiB refuses the size, in words.
            s.create(
                &name,
                layout.size,
                VolumeKind::Disk,
                None,
                &[
                    BackendErrorKind::InvalidArgument,
                    BackendErrorKind::PermissionDenied,
                    BackendErrorKind::Unsupported,
                ],
            )
            .map(drop)?;
            let made = s.make(&name, VolumeKind::Disk, &layout, None, &expected)?;
            let listed = s
                .listed(&made)?
                .ok_or_else(|| fail(format!("{made} is committed but not listed")))?;
            if listed.size != layout.size {
                return Err(fail(format!(
                    "{made} is listed with {} bytes; it was made with {}",
                    listed.size, layout.size
                )));
            }
            s.read_back(&made, None, &expected)?;
            Ok(format!(
                "{made}: {} bytes, written to its last byte, read back equal",
                layout.size
            ))
        });
        self.case("extents.paging", |s| {
            if !s.has(Capabilities::EXTENTS) || !s.has(Capabilities::ZERO) {
                return Err(skip(
                    "needs extents and zero, to make a map longer than a page without writing data",
                ));
            }
            s.paging()
        });
    }

    /// A volume whose map is longer than one page the host asks for: every other 64 KiB
    /// allocated (and left as the fresh volume has it, zeros), the others never written,
    /// so no two neighbours merge; no byte is written. Its map must come whole, page after
    /// page, as the host checks every page. A backend whose map stays short (it maps
    /// unwritten ranges as data) cannot show paging this way: skipped, saying so.
    fn paging(&mut self) -> Outcome {
        let runs = MAP_PAGE as u64 + 1;
        let size = 2 * runs * UNIT;
        let name = format!("{}-paged", self.tag);
        let mut w = self.create(&name, size, VolumeKind::Disk, None, CREATE_REFUSALS)?;
        let made = w.info.name.clone();
        if w.needs_zeroing() {
            return Err(skip(format!(
                "{made}'s unwritten ranges must be zeroed: its map would be one run"
            )));
        }
        for i in 0..runs {
            let offset = 2 * i * UNIT;
            w.allocate(offset, UNIT, false)
                .map_err(|e| fail(format!("{made}: allocate [{offset}, +{UNIT}): {e}")))?;
        }
        let committed = w.commit().map_err(|e| format!("{made}: commit: {e}"));
        drop(w);
        self.instance.restart();
        committed.map_err(fail)?;
        self.remember(made.clone());
        let read = match self.instance.open_volume(&made, None) {
            Ok(mut v) => content::read(&mut v, Keep::NOTHING, 0),
            Err(e) => return Err(noted(&mut self.errors, &format!("open-volume({made})"), e)),
        }
        .map_err(|why| fail(format!("{made}: {why}")))?;
        if read.extents <= u64::from(MAP_PAGE) {
            return Err(skip(format!(
                "{made}'s map has {} extents, one page: the backend maps its unwritten ranges like the others",
                read.extents
            )));
        }
        Ok(format!(
            "{made}: {} extents over more than one page of {MAP_PAGE}, each page checked",
            read.extents
        ))
    }

    /// Overwrites two ranges of the main volume (one in data, one in a hole) and returns
    /// the content it then has; none when the plugin does not write in place.
    fn overwrite_main(&mut self) -> std::result::Result<Option<Vec<u8>>, Stop> {
        let m = self.main.as_ref().expect("main volume");
        let (name, mut now) = (m.name.clone(), m.expected.clone());
        let runs = vec![
            Run {
                offset: UNIT,
                length: 2 * UNIT,
                fill: Fill::Pattern(11),
            },
            Run {
                offset: 6 << 20,
                length: UNIT,
                fill: Fill::Pattern(12),
            },
        ];
        let layout = Layout {
            size: m.layout.size,
            runs,
        };
        for r in &layout.runs {
            if let Fill::Pattern(seed) = r.fill {
                let span = r.offset as usize..(r.offset + r.length) as usize;
                content::pattern(seed, r.offset, &mut now[span]);
            }
        }
        let mut w = match self.instance.open_volume_for_write(&name) {
            Ok(w) => w,
            // WRITE promises the write path of new volumes; writing in place is more.
            Err(e) if e.kind == ErrorKind::Backend(BackendErrorKind::Unsupported) => {
                self.errors
                    .push(("open-volume(read-write)".into(), e.message.clone()));
                return Ok(None);
            }
            Err(e) => {
                return Err(noted(
                    &mut self.errors,
                    &format!("open-volume({name}, read-write)"),
                    e,
                ))
            }
        };
        let r = content::write(&mut w, &layout, &now)
            .and_then(|()| w.commit().map_err(|e| format!("commit: {e}")));
        drop(w);
        self.instance.restart();
        r.map_err(|why| fail(format!("{name}, written again: {why}")))?;
        Ok(Some(now))
    }

    fn snapshots(&mut self) {
        let names = [
            "snapshot.create",
            "snapshot.read-old",
            "snapshot.changed-extents",
            "snapshot.restore",
            "snapshot.conflict",
            "snapshot.delete",
        ];
        if !self.has(Capabilities::SNAPSHOT_CREATE) {
            self.skip_all(&names, "snapshot-create is not declared");
            return;
        }
        let Some(main) = self.main.as_ref().map(|m| m.name.clone()) else {
            let why = self
                .cannot_write()
                .unwrap_or_else(|| "write.create failed".into());
            self.skip_all(&names, &why);
            return;
        };
        let asked = format!("{}-s1", self.tag);
        let mut snap: Option<String> = None;
        let size = self.main.as_ref().map_or(0, |m| m.layout.size);
        self.case("snapshot.create", |s| {
            let made = s
                .instance
                .create_snapshot(&main, &asked, Self::now_ms())
                .map_err(|e| {
                    // "The backend or this volume cannot do that": an LVM pool snapshots
                    // thin LVs, not linear ones.
                    refused(
                        &mut s.errors,
                        &format!("create-snapshot({main}, {asked})"),
                        e,
                        &[
                            BackendErrorKind::Unsupported,
                            BackendErrorKind::PermissionDenied,
                        ],
                        s.scratch,
                    )
                })?;
            s.instance.restart();
            // A backend may name snapshots itself (a CSI driver does); the host takes
            // any plain name it answers.
            snap = Some(made.name.clone());
            if made.volume != main {
                return Err(fail(format!(
                    "asked for a snapshot of {main}, answered one of {}",
                    made.volume
                )));
            }
            let listed = s
                .instance
                .list_snapshots(Some(&main))
                .map_err(|e| noted(&mut s.errors, &format!("list-snapshots({main})"), e))?;
            let name = &made.name;
            match listed.iter().find(|x| x.name == *name) {
                None => Err(fail(format!("{main}@{name} was made but is not listed"))),
                Some(x) if x.size != size => Err(fail(format!(
                    "{main}@{name} is listed with {} bytes, its volume has {size}",
                    x.size
                ))),
                Some(_) => Ok(format!("{main}@{name} made and listed")),
            }
        });
        let Some(snap) = snap else {
            self.skip_all(&names[1..], "snapshot.create failed");
            return;
        };
        let old = self
            .main
            .as_ref()
            .map(|m| m.expected.clone())
            .unwrap_or_default();
        let mut new: Option<Vec<u8>> = None;
        self.case("snapshot.read-old", |s| {
            if !s.has(Capabilities::WRITE) {
                return Err(skip("write is not declared"));
            }
            let Some(now) = s.overwrite_main()? else {
                s.read_back(&main, Some(&snap), &old)?;
                return Ok(format!(
                    "{main}@{snap} reads as {main} was (the plugin does not write in place, so nothing changed since)"
                ));
            };
            s.read_back(&main, Some(&snap), &old)?;
            s.read_back(&main, None, &now)?;
            new = Some(now);
            Ok(format!("{main} written again; {main}@{snap} reads the old bytes, {main} the new"))
        });
        self.case("snapshot.changed-extents", |s| {
            if !s.has(Capabilities::CHANGED_BLOCKS) {
                return Err(skip("changed-blocks is not declared"));
            }
            // As an incremental export asks: a later snapshot against the earlier one.
            let now = new.clone().unwrap_or_else(|| old.clone());
            let later = s
                .instance
                .create_snapshot(&main, &format!("{}-s2", s.tag), Self::now_ms())
                .map_err(|e| {
                    noted(
                        &mut s.errors,
                        &format!("create-snapshot({main}, second)"),
                        e,
                    )
                })?
                .name;
            s.instance.restart();
            let ranges = match s.instance.open_volume(&main, Some(&later)) {
                Ok(mut v) => v.changed_ranges(&snap),
                Err(e) => {
                    return Err(noted(
                        &mut s.errors,
                        &format!("open-volume({main}@{later})"),
                        e,
                    ))
                }
            };
            s.instance.restart();
            if s.has(Capabilities::SNAPSHOT_DELETE) {
                s.instance.delete_snapshot(&main, &later).map_err(|e| {
                    noted(
                        &mut s.errors,
                        &format!("delete-snapshot({main}, {later})"),
                        e,
                    )
                })?;
                s.instance.restart();
            }
            let ranges = ranges.map_err(|e| {
                noted(
                    &mut s.errors,
                    &format!("changed-extents({main}@{later}, {snap})"),
                    e,
                )
            })?;
            let covered = |at: u64| ranges.iter().any(|(o, l)| *o <= at && at < o + l);
            let missed = old
                .iter()
                .zip(&now)
                .enumerate()
                .find(|(i, (a, b))| a != b && !covered(*i as u64));
            if let Some((at, _)) = missed {
                return Err(fail(format!(
                    "byte {at} changed between {snap} and {later}, but no changed extent covers it"
                )));
            }
            let total: u64 = ranges.iter().map(|(_, l)| l).sum();
            Ok(format!(
                "{main}@{later} against {snap}: {} ranges, {total} bytes, cover every changed byte",
                ranges.len()
            ))
        });
        self.case("snapshot.restore", |s| {
            if !s.has(Capabilities::SNAPSHOT_RESTORE) {
                return Err(skip("snapshot-restore is not declared"));
            }
            s.instance.restore_snapshot(&main, &snap).map_err(|e| {
                noted(
                    &mut s.errors,
                    &format!("restore-snapshot({main}, {snap})"),
                    e,
                )
            })?;
            s.instance.restart();
            s.read_back(&main, None, &old)?;
            Ok(format!("{main} reads {snap}'s bytes again"))
        });
        self.case("snapshot.conflict", |s| {
            if snap != asked {
                return Err(skip(format!(
                    "the backend names snapshots itself (asked {asked}, made {snap}): no name can be taken"
                )));
            }
            let r = s.instance.create_snapshot(&main, &snap, Self::now_ms());
            if let Ok(x) = &r {
                if x.name != snap {
                    let _ = s.instance.delete_snapshot(&main, &x.name);
                }
            }
            s.expect_error(&format!("create-snapshot({main}, {snap}) again"), r, &[BackendErrorKind::Conflict])
        });
        self.case("snapshot.delete", |s| {
            if !s.has(Capabilities::SNAPSHOT_DELETE) {
                return Err(skip("snapshot-delete is not declared"));
            }
            s.instance.delete_snapshot(&main, &snap).map_err(|e| {
                noted(
                    &mut s.errors,
                    &format!("delete-snapshot({main}, {snap})"),
                    e,
                )
            })?;
            s.instance.restart();
            let listed = s
                .instance
                .list_snapshots(Some(&main))
                .map_err(|e| noted(&mut s.errors, &format!("list-snapshots({main})"), e))?;
            if listed.iter().any(|x| x.name == snap) {
                return Err(fail(format!("{main}@{snap} is deleted but still listed")));
            }
            let r = s.instance.open_volume(&main, Some(&snap)).map(drop);
            s.expect_error(
                &format!("open-volume({main}@{snap}) after deleting it"),
                r,
                &[BackendErrorKind::NotFound],
            )
            .map(|_| format!("{main}@{snap} deleted: not listed, not found"))
        });
    }

    fn clones(&mut self) {
        let names = ["clone.reads-parent", "clone.parent-untouched"];
        if !self.has(Capabilities::THIN_CLONE) {
            self.skip_all(&names, "thin-clone is not declared");
            return;
        }
        if let Some(why) = self.cannot_write() {
            self.skip_all(&names, &why);
            return;
        }
        let layout = Layout::main(20, false);
        let base = layout.expected();
        let mut image: Option<String> = None;
        self.case("clone.reads-parent", |s| {
            let made = s.make(
                &format!("{}-img", s.tag),
                VolumeKind::Image,
                &layout,
                None,
                &base,
            )?;
            image = Some(made.clone());
            let top = Layout {
                size: layout.size,
                runs: vec![Run {
                    offset: 0,
                    length: UNIT,
                    fill: Fill::Pattern(30),
                }],
            };
            let mut want = base.clone();
            content::pattern(30, 0, &mut want[..UNIT as usize]);
            let clone = s.make(
                &format!("{}-clone", s.tag),
                VolumeKind::Disk,
                &top,
                Some(&made),
                &want,
            )?;
            s.read_back(&clone, None, &want)?;
            Ok(format!(
                "{clone} of {made} reads its parent where not written, its own bytes where written"
            ))
        });
        self.case("clone.parent-untouched", |s| {
            let Some(image) = image else {
                return Err(skip("clone.reads-parent made no image"));
            };
            s.read_back(&image, None, &base)?;
            Ok(format!("{image} reads as it was written"))
        });
    }

    /// A volume to aim calls at: the suite's own, else the first listed.
    fn some_volume(&self) -> Option<String> {
        self.main
            .as_ref()
            .map(|m| m.name.clone())
            .or_else(|| self.volumes.first().map(|v| v.name.clone()))
    }

    fn robustness(&mut self) {
        let missing = format!("{}-missing", self.tag);
        self.case("robust.missing-volume", |s| {
            let r = s.instance.open_volume(&missing, None).map(drop);
            s.expect_error(
                &format!("open-volume({missing})"),
                r,
                &[BackendErrorKind::NotFound],
            )
        });
        let volume = self.some_volume();
        self.case("robust.missing-snapshot", |s| {
            let Some(v) = volume.clone() else {
                return Err(skip("the pool lists no volume"));
            };
            let r = s.instance.open_volume(&v, Some(&missing)).map(drop);
            // A plugin without snapshots may answer that it has none.
            let mut want = vec![BackendErrorKind::NotFound];
            if !s.has(Capabilities::SNAPSHOT_CREATE) {
                want.push(BackendErrorKind::Unsupported);
            }
            s.expect_error(&format!("open-volume({v}@{missing})"), r, &want)
        });
        self.case("robust.map-past-end", |s| {
            let Some(v) = volume.clone() else {
                return Err(skip("the pool lists no volume"));
            };
            let mut open = match s.instance.open_volume(&v, None) {
                Ok(o) => o,
                Err(e) => return Err(noted(&mut s.errors, &format!("open-volume({v})"), e)),
            };
            let size = open.info.size;
            let mut problems = Vec::new();
            for start in [Some(size), size.checked_add(UNIT), Some(u64::MAX - 1)]
                .into_iter()
                .flatten()
            {
                match open.map_page(start) {
                    Ok(p) if p.extents.is_empty() && p.next_offset.is_none() => {}
                    Ok(p) => problems.push(format!(
                        "map-extents({start}) of {v} ({size} bytes) answered {} extents and next {:?}, not an empty last page",
                        p.extents.len(),
                        p.next_offset
                    )),
                    Err(e) if e.kind() == snapport_core::ErrorKind::InvalidInput => {
                        if !has_text(&s.who, &e.to_string()) {
                            problems.push(format!("map-extents({start}) answered an error without text"));
                        }
                    }
                    Err(e) => problems.push(format!("map-extents({start}) of {v}: {e}")),
                }
            }
            drop(open);
            match problems.into_iter().next() {
                Some(p) => Err(fail(p)),
                None => Ok(format!(
                    "map-extents at and past the end of {v} answers an empty page or out-of-range"
                )),
            }
        });
        self.case("read.map-from-middle", |s| {
            let Some(v) = volume.clone() else {
                return Err(skip("the pool lists no volume"));
            };
            let mut open = match s.instance.open_volume(&v, None) {
                Ok(o) => o,
                Err(e) => return Err(noted(&mut s.errors, &format!("open-volume({v})"), e)),
            };
            let size = open.info.size;
            let mid = (size / 2 / 512 * 512)
                .saturating_add(512)
                .min(size.saturating_sub(1))
                / 512
                * 512;
            let walk =
                |src: &mut dyn VolumeSource, start| -> std::result::Result<Vec<Extent>, String> {
                    let mut map = CheckedMap::at(src, start);
                    let mut out = Vec::new();
                    while let Some(e) = map.next_extent().map_err(|e| e.to_string())? {
                        if out.len() as u64 >= content::MAX_EXTENTS {
                            return Err(format!(
                                "the extent map is too fragmented: more than {} extents",
                                content::MAX_EXTENTS
                            ));
                        }
                        out.push(e);
                    }
                    Ok(out)
                };
            let whole = walk(&mut open, 0).map_err(fail)?;
            let tail = walk(&mut open, mid).map_err(|e| fail(format!("from {mid}: {e}")))?;
            drop(open);
            let clipped: Vec<Extent> = whole
                .into_iter()
                .filter(|e| e.end() > mid)
                .map(|e| {
                    if e.offset < mid {
                        e.advance(mid - e.offset)
                    } else {
                        e
                    }
                })
                .collect();
            if merged(&clipped) != merged(&tail) {
                return Err(fail(format!(
                    "the map of {v} asked from {mid} differs from the whole map's part from {mid}"
                )));
            }
            Ok(format!(
                "{v} mapped from {mid} equals its whole map from there"
            ))
        });
    }

    /// For every capability not declared that has a call of its own: the call answers
    /// `unsupported` (not a trap, not success, not another error).
    fn unsupported(&mut self) {
        let volume = self.some_volume();
        let missing = format!("{}-missing", self.tag);
        let tag = self.tag.clone();
        let checks: [(&'static str, Capabilities); 8] = [
            ("unsupported.write", Capabilities::WRITE),
            ("unsupported.changed-blocks", Capabilities::CHANGED_BLOCKS),
            ("unsupported.snapshot-create", Capabilities::SNAPSHOT_CREATE),
            ("unsupported.snapshot-delete", Capabilities::SNAPSHOT_DELETE),
            (
                "unsupported.snapshot-restore",
                Capabilities::SNAPSHOT_RESTORE,
            ),
            ("unsupported.volume-create", Capabilities::VOLUME_CREATE),
            ("unsupported.volume-delete", Capabilities::VOLUME_DELETE),
            ("unsupported.thin-clone", Capabilities::THIN_CLONE),
        ];
        const U: &[BackendErrorKind] = &[BackendErrorKind::Unsupported];
        for (name, cap) in checks {
            self.case(name, |s| {
                if s.has(cap) {
                    return Err(skip("declared"));
                }
                let target = volume.clone().unwrap_or_else(|| missing.clone());
                match name {
                    "unsupported.write" => {
                        let Some(v) = volume.clone() else {
                            return Err(skip("the pool lists no volume to open for writing"));
                        };
                        if !s.writable {
                            return Err(skip("the grants are read-only: the host refuses first"));
                        }
                        let r = s.instance.open_volume_for_write(&v).map(drop);
                        s.expect_error(&format!("open-volume({v}, read-write)"), r, U)
                    }
                    "unsupported.changed-blocks" => {
                        let Some(v) = volume.clone() else {
                            return Err(skip("the pool lists no volume to ask"));
                        };
                        let r = match s.instance.open_volume(&v, None) {
                            Ok(mut o) => o.changed_ranges(&missing).map(drop),
                            Err(e) => {
                                return Err(noted(&mut s.errors, &format!("open-volume({v})"), e))
                            }
                        };
                        s.expect_error(&format!("changed-extents({v}, {missing})"), r, U)
                    }
                    "unsupported.snapshot-create" => {
                        let snap = format!("{tag}-u");
                        let r = s.instance.create_snapshot(&target, &snap, Self::now_ms());
                        if r.is_ok() {
                            let _ = s.instance.delete_snapshot(&target, &snap);
                        }
                        s.expect_error(&format!("create-snapshot({target}, {snap})"), r, U)
                    }
                    "unsupported.snapshot-delete" => {
                        let r = s.instance.delete_snapshot(&target, &missing);
                        s.expect_error(&format!("delete-snapshot({target}, {missing})"), r, U)
                    }
                    "unsupported.snapshot-restore" => {
                        let r = s.instance.restore_snapshot(&target, &missing);
                        s.expect_error(&format!("restore-snapshot({target}, {missing})"), r, U)
                    }
                    "unsupported.volume-create" => {
                        let v = format!("{tag}-u");
                        // Dropped uncommitted if it was made: the host removes it.
                        let r = s
                            .instance
                            .create_volume(&v, UNIT, VolumeKind::Disk, None)
                            .map(drop);
                        s.expect_error(&format!("create-volume({v})"), r, U)
                    }
                    "unsupported.volume-delete" => {
                        let r = s.instance.delete_volume(&missing);
                        s.expect_error(&format!("delete-volume({missing})"), r, U)
                    }
                    _ => {
                        let v = format!("{tag}-u");
                        let r = s
                            .instance
                            .create_volume(&v, UNIT, VolumeKind::Disk, Some(&target))
                            .map(drop);
                        s.expect_error(&format!("create-volume({v}, parent {target})"), r, U)
                    }
                }
            });
        }
    }

    fn deleting(&mut self) {
        let main = self.main.as_ref().map(|m| m.name.clone());
        self.case("volume.delete", |s| {
            if !s.has(Capabilities::VOLUME_DELETE) {
                return Err(skip("volume-delete is not declared"));
            }
            let Some(main) = main else {
                let why = s
                    .cannot_write()
                    .unwrap_or_else(|| "write.create failed".into());
                return Err(skip(why));
            };
            // Clones before what they read through.
            let others: Vec<String> = s
                .created
                .iter()
                .rev()
                .filter(|n| **n != main)
                .cloned()
                .collect();
            for v in others {
                s.instance
                    .delete_volume(&v)
                    .map_err(|e| noted(&mut s.errors, &format!("delete-volume({v})"), e))?;
                s.created.retain(|n| *n != v);
                s.instance.restart();
            }
            s.instance
                .delete_volume(&main)
                .map_err(|e| noted(&mut s.errors, &format!("delete-volume({main})"), e))?;
            s.created.retain(|n| *n != main);
            s.instance.restart();
            if s.listed(&main)?.is_some() {
                return Err(fail(format!("{main} is deleted but still listed")));
            }
            let r = s.instance.open_volume(&main, None).map(drop);
            s.expect_error(
                &format!("open-volume({main}) after deleting it"),
                r,
                &[BackendErrorKind::NotFound],
            )
            .map(|_| format!("{main} deleted: not listed, not found"))
        });
        // In the operator's pool, say that the suite left nothing behind.
        if !self.scratch && self.cannot_write().is_none() {
            self.case("cleanup", |s| {
                let mut left = Vec::new();
                for v in s.created.clone().into_iter().rev() {
                    if let Err(e) = s.instance.delete_volume(&v) {
                        left.push(format!("{v} ({})", e.message));
                    }
                }
                s.created.clear();
                if left.is_empty() {
                    Ok("every snapport-test-* volume removed".into())
                } else {
                    Err(fail(format!("left in the pool: {}", left.join(", "))))
                }
            });
        }
    }
}

/// `map` with adjacent extents that continue each other joined, so two maps that say the
/// same in different pieces compare equal.
fn merged(map: &[Extent]) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    for e in map {
        if let Some(last) = out.last_mut() {
            let continues = last.end() == e.offset
                && match (last.location, e.location) {
                    (Location::Zero, Location::Zero) => true,
                    (Location::Unallocated, Location::Unallocated) => true,
                    (
                        Location::Data {
                            device: a,
                            offset: x,
                        },
                        Location::Data {
                            device: b,
                            offset: y,
                        },
                    ) => a == b && x + last.length == y,
                    _ => false,
                };
            if continues {
                last.length += e.length;
                continue;
            }
        }
        out.push(*e);
    }
    out
}
