//! A test-only plugin that misbehaves on purpose, to prove the host survives it. The pool
//! setting `behaviour` picks the misdeed; `good` makes it an honest raw-like backend over
//! the granted device `disk`, so tests can show a recovered host working again. Volumes
//! it creates (the write path) are files in the granted folder, and the `write-*` and
//! `commit-*` behaviours lie or fail there; `grpc-csi` and `grpc-other` call the pool's gRPC
//! endpoint, a CSI method and a method outside CSI.
//!
//! The `probe-*` behaviours call the host's functions with hostile arguments (paths with
//! `..`, absolute, with NUL, 64 KiB long; another pool's files; devices closed or never
//! opened; sizes and offsets near `u64::MAX`; gRPC and tools the pool does not grant)
//! and list one volume, `probe`, whose labels say what the host answered to each call:
//! `refused KIND: MESSAGE` or `ok: WHAT`. `named` answers with the name in the setting
//! `name`, `fail` fails with the text in `message`, `log` logs (`lines` times `message`,
//! after one message of `bytes` bytes), `many` lists `count` volumes, `recurse` recurses
//! until the stack runs out; the setting `label` becomes the `error` label of its volume.
//! `panic` tells the host `panicked` (the setting `message`) and traps in `list-volumes`,
//! and traps without a word in `map-extents`. `script` runs the host calls of 0.1.2 that
//! the setting `script` lists, one a line (see [`script`]), and answers like a probe.
#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

wit_bindgen::generate!({ world: "backend-plugin", path: "../../../wit" });

use exports::snapport::backend::backend::{Guest, GuestVolume, PluginInfo, Volume as VolumeHandle};
use snapport::backend::{grpc, host, tools};
use snapport::backend::types::{
    Access, BackendError, Capabilities, DeviceOffset, EntryKind, Extent, ExtentPage, FolderEntry, GrantedFolder, Label,
    LogLevel, Location, SnapshotInfo, SnapshotPhase, VolumeInfo, VolumeKind,
};

#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

fn behaviour() -> String {
    host::setting("behaviour").unwrap_or_else(|| "good".into())
}

fn setting(key: &str) -> String {
    host::setting(key).unwrap_or_default()
}

fn number(key: &str) -> u64 {
    setting(key).parse().unwrap_or(0)
}

/// The volume's name: `disk`, or the setting `name` (which a test makes hostile).
fn name() -> String {
    host::setting("name").unwrap_or_else(|| "disk".into())
}

fn info_of(size: u64) -> VolumeInfo {
    VolumeInfo {
        name: name(),
        size,
        kind: VolumeKind::Disk,
        format: "raw".into(),
        allocated: None,
        parent: None,
        // A test's text for the `error` label, which `get` prints.
        labels: host::setting("label").map(|value| Label { key: "error".into(), value }).into_iter().collect(),
    }
}

fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = core::hint::black_box(x.wrapping_add(1));
    }
}

fn hoard() -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        chunk[0] = kept.len() as u8;
        kept.push(core::hint::black_box(chunk));
    }
}

/// How a probed call ended, as a label value.
fn outcome<T>(r: Result<T, BackendError>, ok: impl FnOnce(T) -> String) -> String {
    let (kind, msg) = match r {
        Ok(v) => return format!("ok: {}", ok(v)),
        Err(BackendError::NotFound(m)) => ("not-found", m),
        Err(BackendError::InvalidArgument(m)) => ("invalid-argument", m),
        Err(BackendError::Unsupported(m)) => ("unsupported", m),
        Err(BackendError::PermissionDenied(m)) => ("permission-denied", m),
        Err(BackendError::OutOfRange(m)) => ("out-of-range", m),
        Err(BackendError::Corrupt(m)) => ("corrupt", m),
        Err(BackendError::Busy(m)) => ("busy", m),
        Err(BackendError::Conflict(m)) => ("conflict", m),
        Err(BackendError::Io(m)) => ("io", m),
    };
    format!("refused {kind}: {msg}")
}

fn opened(id: u32) -> String {
    format!("device {id}")
}

fn unit(_: ()) -> String {
    "done".into()
}

/// Paths no plugin may reach: parent folders, absolute paths, NUL, 64 KiB.
fn hostile_paths() -> Vec<(&'static str, String)> {
    vec![
        ("dotdot", "..".into()),
        ("dotdot-etc", "../../../../../../../../etc/hostname".into()),
        ("inner-dotdot", "sub/../../../../../../etc/hostname".into()),
        ("absolute", "/etc/hostname".into()),
        ("nul", "disk\0.raw".into()),
        ("nul-inside", "keep.raw\0../../../etc/hostname".into()),
        ("long", "x".repeat(64 << 10)),
        ("long-dotdot", "../".repeat(20 << 10)),
    ]
}

fn listed(entries: Vec<FolderEntry>) -> String {
    let kind = |k: EntryKind| match k {
        EntryKind::File => "file",
        EntryKind::Folder => "folder",
        EntryKind::BlockDevice => "block-device",
    };
    let words: Vec<String> = entries.into_iter().map(|e| format!("{} {} {}", e.name, kind(e.kind), e.size)).collect();
    words.join(", ")
}

fn folders(list: Vec<GrantedFolder>) -> String {
    let words: Vec<String> =
        list.into_iter().map(|f| format!("{} {} {}", f.id, f.name, if f.writable { "rw" } else { "ro" })).collect();
    words.join(", ")
}

/// A folder number of a script or probe: digits, or `max` for `u32::MAX`.
fn folder_id(word: &str) -> u32 {
    if word == "max" {
        u32::MAX
    } else {
        word.parse().unwrap_or(u32::MAX - 1)
    }
}

/// Runs the steps of the setting `script`, one a line, each answer a label `00`, `01`...:
/// `folders`; `list F PATH`; `open F PATH` and `open-rw F PATH` (the device opened is the
/// one `read`, `write TEXT` and `publish` use); `create F PATH` (`create-file-in`); `mkdir
/// F PATH`; `remove F PATH`; `read` (up to 4 KiB as text); `write TEXT` (at offset 0);
/// `publish`; `size` (`device-size`); `files` (`list-files`, how many); `fail` (the call
/// fails); `trap`; `panic MESSAGE` (`panicked`, then a trap); `said MESSAGE` (`panicked`
/// only); `alloc` (allocates without bound).
/// `F` is a folder number or `max`; `PATH` is the rest of the line, possibly empty.
fn script() -> Result<Vec<Label>, BackendError> {
    let text = setting("script");
    let mut labels = Vec::new();
    let mut device: Option<u32> = None;
    for (i, step) in text.split('\n').enumerate() {
        let mut words = step.splitn(3, ' ');
        let command = words.next().unwrap_or("");
        let folder = folder_id(words.next().unwrap_or(""));
        let path = words.next().unwrap_or("");
        let rest = step.split_once(' ').map(|(_, r)| r).unwrap_or("");
        let current = || device.ok_or_else(|| BackendError::InvalidArgument("the script opened nothing".into()));
        let answer = match command {
            "folders" => format!("ok: {}", folders(host::granted_folders())),
            "list" => outcome(host::list_folder(folder, path), listed),
            "open" | "open-rw" | "create" => {
                let r = match command {
                    "open" => host::open_in(folder, path, Access::ReadOnly),
                    "open-rw" => host::open_in(folder, path, Access::ReadWrite),
                    _ => host::create_file_in(folder, path),
                };
                if let Ok(id) = r {
                    device = Some(id);
                }
                outcome(r, opened)
            }
            "mkdir" => outcome(host::create_folder(folder, path), unit),
            "remove" => outcome(host::remove_in(folder, path), unit),
            "read" => {
                outcome(current().and_then(|d| host::read_at(d, 0, 4096)), |b| String::from_utf8_lossy(&b).into_owned())
            }
            "write" => outcome(current().and_then(|d| host::write_at(d, 0, rest.as_bytes())), unit),
            "publish" => outcome(current().and_then(host::publish_file), unit),
            "size" => outcome(current().and_then(host::device_size), |s| s.to_string()),
            "files" => outcome(host::list_files(), |f| format!("{} files", f.len())),
            "said" => {
                host::panicked(rest);
                "ok: said".into()
            }
            "alloc" => hoard(),
            "fail" => return Err(BackendError::Io("the script fails here".into())),
            "trap" => core::arch::wasm32::unreachable(),
            "panic" => {
                host::panicked(rest);
                core::arch::wasm32::unreachable()
            }
            _ => format!("unknown step {step:?}"),
        };
        labels.push(Label { key: format!("{i:02}"), value: answer });
    }
    Ok(labels)
}

/// Runs every host call of a `probe-*` behaviour; each answer becomes a label.
fn probe(which: &str) -> Vec<Label> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut note = |key: &str, value: String| out.push((key.into(), value));
    match which {
        "probe-paths" => {
            for (key, path) in hostile_paths() {
                let path = path.as_str();
                note(&format!("open-{key}"), outcome(host::open(path, None, Access::ReadOnly), opened));
                note(&format!("open-rw-{key}"), outcome(host::open(path, None, Access::ReadWrite), opened));
                note(&format!("create-{key}"), outcome(host::create_file(path), opened));
                note(&format!("remove-{key}"), outcome(host::remove_file(path), unit));
            }
            // The same, relative to a granted device.
            let disk = host::open("disk", None, Access::ReadOnly);
            note("open-disk", outcome(disk.clone(), opened));
            if let Ok(disk) = disk {
                for (key, path) in hostile_paths() {
                    let r = host::open(&path, Some(disk), Access::ReadOnly);
                    note(&format!("open-beside-disk-{key}"), outcome(r, opened));
                }
            }
            // An absolute path the test names, where nothing may appear.
            let outside = setting("outside");
            note("create-outside", outcome(host::create_file(&outside), opened));
            note("open-rw-outside", outcome(host::open(&outside, None, Access::ReadWrite), opened));
        }
        "probe-other-pool" => {
            // Another pool's file, by absolute path and by a path up and across.
            for (key, path) in [("absolute", setting("other")), ("relative", setting("other-relative"))] {
                let ro = host::open(&path, None, Access::ReadOnly);
                let rw = host::open(&path, None, Access::ReadWrite);
                note(&format!("open-{key}"), outcome(ro.clone(), opened));
                note(&format!("open-rw-{key}"), outcome(rw.clone(), opened));
                for id in [ro, rw].into_iter().flatten() {
                    note(&format!("read-{key}"), outcome(host::read_at(id, 0, 16), |b| format!("{} bytes", b.len())));
                    note(&format!("write-{key}"), outcome(host::write_at(id, 0, b"owned"), unit));
                    note(&format!("set-size-{key}"), outcome(host::set_size(id, 0), unit));
                }
                note(&format!("remove-{key}"), outcome(host::remove_file(&path), unit));
                note(&format!("create-{key}"), outcome(host::create_file(&path), opened));
            }
        }
        "probe-handles" => {
            // Never opened.
            for id in [4242, u32::MAX] {
                note(&format!("size-{id}"), outcome(host::device_size(id), |s| s.to_string()));
                note(&format!("read-{id}"), outcome(host::read_at(id, 0, 16), |b| format!("{} bytes", b.len())));
                note(&format!("write-{id}"), outcome(host::write_at(id, 0, b"x"), unit));
                note(&format!("set-size-{id}"), outcome(host::set_size(id, 4096), unit));
                note(&format!("flush-{id}"), outcome(host::flush(id), unit));
                note(&format!("publish-{id}"), outcome(host::publish_file(id), unit));
                note(&format!("open-beside-{id}"), outcome(host::open("keep.raw", Some(id), Access::ReadOnly), opened));
                host::close(id);
            }
            // Closed, then used, then closed again.
            let created = host::create_file("made.raw");
            note("create", outcome(created.clone(), opened));
            for id in [host::open("disk", None, Access::ReadOnly).ok(), created.ok()].into_iter().flatten() {
                host::close(id);
                note(&format!("size-closed-{id}"), outcome(host::device_size(id), |s| s.to_string()));
                note(&format!("read-closed-{id}"), outcome(host::read_at(id, 0, 16), |b| format!("{} bytes", b.len())));
                note(&format!("write-closed-{id}"), outcome(host::write_at(id, 0, b"x"), unit));
                note(&format!("set-size-closed-{id}"), outcome(host::set_size(id, 4096), unit));
                note(&format!("flush-closed-{id}"), outcome(host::flush(id), unit));
                let beside = host::open("keep.raw", Some(id), Access::ReadOnly);
                note(&format!("open-beside-closed-{id}"), outcome(beside, opened));
                host::close(id);
            }
            // A device that is not a created file cannot be published.
            let disk = host::open("disk", None, Access::ReadOnly);
            note("publish-granted", outcome(disk.and_then(host::publish_file), unit));
        }
        "probe-sizes" => {
            let created = host::create_file("huge.raw");
            note("create", outcome(created.clone(), opened));
            if let Ok(id) = created {
                note("set-size-max", outcome(host::set_size(id, u64::MAX), unit));
                note("set-size-past-i64", outcome(host::set_size(id, 1 << 63), unit));
                note("write-max-1", outcome(host::write_at(id, u64::MAX - 1, b"xy"), unit));
                note("write-max-1-one", outcome(host::write_at(id, u64::MAX - 1, b"x"), unit));
                note("write-past-i64", outcome(host::write_at(id, 1 << 63, b"x"), unit));
                let read = host::read_at(id, u64::MAX - 1, u32::MAX);
                note("read-max-1", outcome(read, |b| format!("{} bytes", b.len())));
                note("size-after", outcome(host::device_size(id), |s| s.to_string()));
            }
            let disk = host::open("disk", None, Access::ReadOnly);
            if let Ok(id) = disk {
                note("read-4g", outcome(host::read_at(id, 0, u32::MAX), |b| format!("{} bytes", b.len())));
                note("write-read-only", outcome(host::write_at(id, 0, b"x"), unit));
                note("set-size-read-only", outcome(host::set_size(id, u64::MAX), unit));
            }
        }
        "probe-folders" => {
            // Every 0.1.2 call that takes a path, with paths that are not paths.
            let mut paths = hostile_paths();
            paths.extend([
                ("hidden", ".hidden".into()),
                ("hidden-inner", "sub/.x".into()),
                ("double-slash", "sub//keep.raw".into()),
                ("trailing-slash", "keep.raw/".into()),
                ("dot", "./keep.raw".into()),
                ("long-parts", "x/".repeat(2100) + "x"),
            ]);
            for (key, path) in paths {
                let path = path.as_str();
                note(&format!("list-{key}"), outcome(host::list_folder(0, path), listed));
                note(&format!("open-in-{key}"), outcome(host::open_in(0, path, Access::ReadOnly), opened));
                note(&format!("open-in-rw-{key}"), outcome(host::open_in(0, path, Access::ReadWrite), opened));
                note(&format!("create-folder-{key}"), outcome(host::create_folder(0, path), unit));
                note(&format!("create-file-in-{key}"), outcome(host::create_file_in(0, path), opened));
                note(&format!("remove-in-{key}"), outcome(host::remove_in(0, path), unit));
            }
            // Symbolic links the test put in the folder that lead out of it (to the other
            // pool's folder), and a FIFO.
            let links = [("link-out", "out-link"), ("link-abs", "abs-link"), ("link-dir", "out-dir/secret.raw")];
            for (key, path) in links {
                note(&format!("open-in-{key}"), outcome(host::open_in(0, path, Access::ReadOnly), opened));
                note(&format!("open-in-rw-{key}"), outcome(host::open_in(0, path, Access::ReadWrite), opened));
            }
            note("open-in-fifo", outcome(host::open_in(0, "pipe", Access::ReadOnly), opened));
            note("list-link-dir", outcome(host::list_folder(0, "out-dir"), listed));
            note("create-folder-link-dir", outcome(host::create_folder(0, "out-dir/new"), unit));
            note("create-file-in-link-dir", outcome(host::create_file_in(0, "out-dir/new.raw"), opened));
            note("remove-in-link-dir", outcome(host::remove_in(0, "out-dir/secret.raw"), unit));
            note("remove-in-fifo", outcome(host::remove_in(0, "pipe"), unit));
            // Folder numbers past the pool's list (the other pool's folder is not in it).
            for id in [1, u32::MAX] {
                note(&format!("list-folder-{id}"), outcome(host::list_folder(id, ""), listed));
                note(&format!("open-in-folder-{id}"), outcome(host::open_in(id, "keep.raw", Access::ReadOnly), opened));
                note(&format!("create-folder-folder-{id}"), outcome(host::create_folder(id, "new"), unit));
                note(&format!("create-file-in-folder-{id}"), outcome(host::create_file_in(id, "new.raw"), opened));
                note(&format!("remove-in-folder-{id}"), outcome(host::remove_in(id, "keep.raw"), unit));
            }
            // What the folder shows: none of the links out, nor the FIFO.
            note("folders", format!("ok: {}", folders(host::granted_folders())));
            note("list", outcome(host::list_folder(0, ""), listed));
        }
        "probe-folder-writes" => {
            // A read-only grant: reads work, every write is refused.
            note("folders", format!("ok: {}", folders(host::granted_folders())));
            note("list", outcome(host::list_folder(0, ""), listed));
            note("open-in", outcome(host::open_in(0, "keep.raw", Access::ReadOnly), opened));
            note("open-in-rw", outcome(host::open_in(0, "keep.raw", Access::ReadWrite), opened));
            note("create-folder", outcome(host::create_folder(0, "new"), unit));
            note("create-file-in", outcome(host::create_file_in(0, "new.raw"), opened));
            note("remove-in", outcome(host::remove_in(0, "keep.raw"), unit));
            note("create-file", outcome(host::create_file("new.raw"), opened));
        }
        "probe-services" => {
            // Settings by hostile keys, gRPC without an endpoint, tools beyond the grant.
            let long = "x".repeat(64 << 10);
            note("setting-long", host::setting(&long).unwrap_or_else(|| "none".into()));
            note("setting-nul", host::setting("behaviour\0").unwrap_or_else(|| "none".into()));
            let unary = grpc::unary("/csi.v1.Identity/GetPluginInfo", b"");
            note("grpc-unary", outcome(unary, |b| format!("{} bytes", b.len())));
            note("grpc-long", outcome(grpc::unary(&long, &vec![0u8; 1 << 16]), |b| format!("{} bytes", b.len())));
            note("grpc-stream", outcome(grpc::start_stream("/csi.v1.Node/NodeGetInfo\0", b""), |s| s.to_string()));
            note("grpc-next-never-started", outcome(grpc::next_message(4242), |m| format!("{m:?}")));
            grpc::close_stream(4242);
            note("tool-granted-sh", tools::granted("../../bin/sh").to_string());
            let sh = tools::run("sh", &["-c".into(), "touch /tmp/owned".into()]);
            note("tool-sh", outcome(sh, |o| format!("{}", o.status)));
            let run = |args: &[&str]| {
                let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                outcome(tools::run("echo", &args), |o| format!("status {} {}", o.status, o.stdout.trim()))
            };
            note("echo-plain", run(&["hello"]));
            note("echo-option", run(&["--version"]));
            note("echo-substitution", run(&["$(touch /tmp/owned)"]));
            note("echo-nul", run(&["a\0b"]));
            note("echo-newline", run(&["a\nb"]));
            note("echo-long", run(&[&long]));
            let many: Vec<&str> = vec!["a"; 10_000];
            note("echo-many", run(&many));
        }
        _ => {}
    }
    out.into_iter().map(|(key, value)| Label { key, value }).collect()
}

/// Recursion the optimizer cannot turn into a loop, until the wasm stack runs out.
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let frame = core::hint::black_box([depth; 16]);
    recurse(depth + 1).wrapping_add(frame[depth as usize % 16])
}

struct Plugin;

impl Guest for Plugin {
    type Volume = Volume;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "test-hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "misbehaves on purpose (tests only)".into(),
            capabilities: Capabilities::READ | Capabilities::EXTENTS,
        }
    }

    fn list_volumes() -> Result<Vec<VolumeInfo>, BackendError> {
        let behaviour = behaviour();
        match behaviour.as_str() {
            "loop-list" => spin(),
            "alloc-list" => hoard(),
            "recurse" => return Err(BackendError::Io(format!("{}", recurse(0)))),
            "fail" => return Err(BackendError::Io(setting("message"))),
            "log" => {
                let bytes = number("bytes") as usize;
                if bytes > 0 {
                    host::log(LogLevel::Warn, &"x".repeat(bytes));
                }
                let message = setting("message");
                for _ in 0..number("lines") {
                    host::log(LogLevel::Warn, &message);
                }
            }
            "many" => {
                let base = VolumeInfo { format: String::new(), ..info_of(0) };
                let volumes =
                    (0..number("count")).map(|i| VolumeInfo { name: format!("v{i}"), ..base.clone() }).collect();
                return Ok(volumes);
            }
            "panic" => {
                host::panicked(&setting("message"));
                core::arch::wasm32::unreachable()
            }
            "script" => return Ok(vec![VolumeInfo { name: "probe".into(), labels: script()?, ..info_of(0) }]),
            b if b.starts_with("probe-") => {
                return Ok(vec![VolumeInfo { name: "probe".into(), labels: probe(b), ..info_of(0) }]);
            }
            // The pool's gRPC endpoint: a CSI call, then a call outside CSI.
            "grpc-csi" => {
                let reply = grpc::unary("/csi.v1.Identity/GetPluginInfo", b"lov")?;
                let mut info = info_of(0);
                info.name = String::from_utf8(reply).map_err(|_| BackendError::Corrupt("not UTF-8".into()))?;
                return Ok(vec![info]);
            }
            "grpc-other" => {
                grpc::unary("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", b"")?;
            }
            _ => {}
        }
        let dev = host::open("disk", None, Access::ReadOnly)?;
        Ok(vec![info_of(host::device_size(dev)?)])
    }

    fn list_snapshots(_: Option<String>) -> Result<Vec<SnapshotInfo>, BackendError> {
        if behaviour() != "named" {
            return Ok(Vec::new());
        }
        Ok(vec![SnapshotInfo {
            name: name(),
            volume: "disk".into(),
            id: "1".into(),
            size: 0,
            created_unix_ms: None,
            parent: None,
            phase: SnapshotPhase::Ready,
            consistent: false,
            labels: Vec::new(),
        }])
    }

    fn open_volume(_: String, _: Option<String>, _: Access) -> Result<VolumeHandle, BackendError> {
        let device = host::open("disk", None, Access::ReadOnly)?;
        let size = host::device_size(device)?;
        Ok(VolumeHandle::new(Volume { device, size, created: None }))
    }

    fn create_volume(name: String, size: u64, _: VolumeKind, _: Option<String>) -> Result<VolumeHandle, BackendError> {
        let created = host::create_file(&name)?;
        host::set_size(created, size)?;
        let device = host::open("disk", None, Access::ReadOnly)?;
        Ok(VolumeHandle::new(Volume { device, size, created: Some(created) }))
    }

    fn delete_volume(_: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }

    fn create_snapshot(_: String, _: String, _: u64) -> Result<SnapshotInfo, BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }

    fn delete_snapshot(_: String, _: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }

    fn restore_snapshot(_: String, _: String) -> Result<(), BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }
}

struct Volume {
    /// The granted device `disk`, read-only.
    device: u32,
    size: u64,
    /// The file `create-volume` made.
    created: Option<u32>,
}

impl Volume {
    fn data(&self, offset: u64, length: u64, at: u64) -> Extent {
        Extent { offset, length, location: Location::Data(DeviceOffset { device: self.device, offset: at }) }
    }
}

impl GuestVolume for Volume {
    fn info(&self) -> VolumeInfo {
        info_of(self.size)
    }

    fn map_extents(&self, start: u64, _: u32) -> Result<ExtentPage, BackendError> {
        let size = self.size;
        let half = size / 2;
        let page = |extents, next_offset| Ok(ExtentPage { extents, next_offset });
        match behaviour().as_str() {
            "loop" => spin(),
            "alloc" => hoard(),
            // A good first page, then a trap in the middle of the export.
            "trap" if start >= half => core::arch::wasm32::unreachable(),
            "panic" => core::arch::wasm32::unreachable(),
            "trap" => page(vec![self.data(0, half, 0)], Some(half)),
            "overlap" => page(vec![self.data(0, half + 4096, 0), self.data(half, size - half, half)], None),
            "backwards" if start >= half => page(vec![self.data(0, size, 0)], None),
            "backwards" => page(vec![self.data(0, half, 0)], Some(half)),
            "out-of-bounds" => page(vec![self.data(0, size, size)], None),
            "past-end" => page(vec![self.data(0, size + (1 << 20), 0)], None),
            "ungranted" => page(
                vec![Extent { offset: 0, length: size, location: Location::Data(DeviceOffset { device: 4242, offset: 0 }) }],
                None,
            ),
            "short" => page(vec![self.data(0, half, 0)], None),
            _ if start >= size => page(Vec::new(), None),
            _ => page(vec![self.data(start, size - start, start)], None),
        }
    }

    fn changed_extents(&self, _: String, _: u64, _: u32) -> Result<ExtentPage, BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }

    fn decode(&self, _: u32, _: Vec<u8>, _: u32) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::Unsupported("test plugin".into()))
    }

    fn allocate(&self, offset: u64, length: u64, _: bool) -> Result<Vec<Extent>, BackendError> {
        let Some(created) = self.created else {
            return Err(BackendError::Unsupported("test plugin".into()));
        };
        let at = |device, offset, length| Extent { offset, length, location: Location::Data(DeviceOffset { device, offset }) };
        match behaviour().as_str() {
            "write-loop" => spin(),
            "write-alloc" => hoard(),
            "write-trap" => core::arch::wasm32::unreachable(),
            // Bytes sent to the read-only device, to one never opened, half a range, more
            // than the range.
            "write-ro" => Ok(vec![at(self.device, offset, length)]),
            "write-ungranted" => Ok(vec![at(4242, offset, length)]),
            "write-short" => Ok(vec![at(created, offset, length / 2)]),
            "write-wide" => Ok(vec![at(created, offset, length + 4096)]),
            _ => Ok(vec![at(created, offset, length)]),
        }
    }

    fn commit(&self) -> Result<(), BackendError> {
        let Some(created) = self.created else {
            return Err(BackendError::Unsupported("test plugin".into()));
        };
        match behaviour().as_str() {
            "commit-trap" => core::arch::wasm32::unreachable(),
            "commit-fail" => Err(BackendError::Io("the metadata write failed".into())),
            _ => host::publish_file(created),
        }
    }
}

export!(Plugin);
