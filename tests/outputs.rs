//! Outputs appear whole or not at all. Every output format (raw, qcow2, raw.zst, a VM
//! bundle, a delta) killed with SIGKILL at several points leaves no file; a full file
//! system leaves nothing under any final name; SIGINT and SIGTERM say so in one line and
//! exit 130 and 143; an existing file is replaced only with --force, and a pool's own
//! files never.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A home whose default pool holds vd/d (qcow2, 1 GiB: 128 MiB of random data, then
/// 32 MiB changed between its snapshots s1 and s2) and vm/web over it, and vd/small
/// (4 MiB, 1 MiB of data). The plugin is compiled and the delta's base map is made
/// already, so that what a test watches is the export itself.
fn lab() -> Home {
    let home = Home::new();
    let random = home.path().join("random.raw");
    random_file(&random, 128);
    let d = home.pool().join("d.qcow2");
    tool(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", p(&random), p(&d)],
    );
    std::fs::remove_file(&random).unwrap();
    tool("qemu-img", &["resize", "-q", p(&d), "1G"]);
    home.ok(&["snapshot", "create", "vd/d", "--name", "s1", "-q"]);
    qemu_io(&d, "qcow2", &["write -P 0x5a 512M 32M"]);
    home.ok(&["snapshot", "create", "vd/d", "--name", "s2", "-q"]);
    let small = home.pool().join("small.qcow2");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&small), "4M"],
    );
    qemu_io(&small, "qcow2", &["write -P 0x77 0 1M"]);
    let cfg = home.path().join("web.json");
    std::fs::write(&cfg, r#"{"name":"web","disks":[{"name":"d"}]}"#).unwrap();
    home.ok(&["create", "vm/web", "--config", p(&cfg), "-q"]);
    // The base's leaf map, so that a delta's first write is the delta's.
    let warm = home.path().join("warm.delta");
    home.ok(&[
        "download",
        "vds/d@s2",
        "--since",
        "vds/d@s1",
        "-q",
        "-o",
        p(&warm),
    ]);
    std::fs::remove_file(warm).unwrap();
    home
}

/// Each output format: its name, the download arguments before `-o FILE`, and the system
/// call its data goes out through.
const FORMATS: [(&str, &[&str], &str); 5] = [
    ("raw", &["download", "vd/d"], "copy_file_range"),
    (
        "qcow2",
        &["download", "vd/d", "--format", "qcow2"],
        "copy_file_range",
    ),
    (
        "raw.zst",
        &["download", "vd/d", "--format", "raw.zst"],
        "write",
    ),
    ("tar", &["download", "vm/web"], "write"),
    (
        "delta",
        &["download", "vds/d@s2", "--since", "vds/d@s1"],
        "write",
    ),
];

fn snapport_cmd(home: &Home, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snapport"));
    cmd.args(args)
        .env("SNAPPORT_HOME", home.path())
        .env_remove("SNAPPORT_PLUGIN_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Where a kill lands.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// At once: the process may not have started.
    Spawned,
    /// At the entry of the first call writing data to the output.
    FirstWrite,
    /// At the entry of the third such call of a thread: mid-stream.
    MidStream,
    /// At the entry of the first link: everything written, nothing named yet.
    Naming,
    /// At the entry of the second link: between a sidecar's and the output's.
    BetweenLinks,
}

/// Runs `args` and kills it with SIGKILL at `point`: strace sends the signal on entering
/// the system call, so the call never runs. Its log proves where the process died.
fn kill_at(home: &Home, args: &[&str], data_call: &str, point: Point) {
    let (sys, when) = match point {
        Point::Spawned => {
            let mut child = snapport_cmd(home, args).spawn().unwrap();
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        Point::FirstWrite => (data_call, 1),
        Point::MidStream => (data_call, 3),
        Point::Naming => ("linkat", 1),
        Point::BetweenLinks => ("linkat", 2),
    };
    let log = home.path().join("strace.log");
    let out = Command::new("strace")
        .args(["-f", "-o", p(&log)])
        .arg(format!("--trace={sys}"))
        .arg(format!("--inject={sys}:signal=SIGKILL:when={when}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_snapport"))
        .args(args)
        .env("SNAPPORT_HOME", home.path())
        .env_remove("SNAPPORT_PLUGIN_PATH")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{args:?} at {point:?} was not killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("+++ killed by SIGKILL +++"), "{log}");
    // The calls before the one it died entering were made, and returned.
    let made = log
        .lines()
        .filter(|l| l.contains(&format!("{sys}(")) || l.contains(&format!("<... {sys} resumed>")))
        .filter(|l| {
            l.rsplit_once(" = ")
                .is_some_and(|(_, r)| r.trim().parse::<i64>().is_ok_and(|n| n >= 0))
        })
        .count();
    assert!(
        made >= when - 1,
        "{args:?} at {point:?}: {made} {sys} calls made before it died: {log}"
    );
}

#[test]
fn kill_9_at_any_point_of_any_format_leaves_no_file() {
    let home = lab();
    let strace = strace_available();
    if !strace {
        eprintln!(
            "strace is not installed: only the kill at once runs; the kills at the first \
             write, mid-stream and before naming need strace to land them there"
        );
    }
    for (ext, args, data_call) in FORMATS {
        let dir = home.out(ext);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("unrelated"), b"here before").unwrap();
        let out = dir.join(format!("out.{ext}"));
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-q", "-o", p(&out)]);
        for point in [
            Point::Spawned,
            Point::FirstWrite,
            Point::MidStream,
            Point::Naming,
        ] {
            if !strace && !matches!(point, Point::Spawned) {
                continue;
            }
            kill_at(&home, &all, data_call, point);
            assert_eq!(
                files_in(&dir),
                ["unrelated"],
                "{ext}: killed at {point:?}, it left files"
            );
        }
        // And the same command, left alone, writes the output.
        home.ok(&all);
        assert!(out.exists(), "{ext}");
    }
    if !strace {
        return;
    }
    // Killed between two links: the sidecar is named before the output, so what is left
    // is a sidecar without its output, never an output without its sidecar. The next
    // export under that name replaces it.
    let dir = home.out("between");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("d.raw");
    let args = ["download", "vd/d", "-q", "-o", p(&out)];
    kill_at(&home, &args, "", Point::BetweenLinks);
    assert_eq!(files_in(&dir), ["d.raw.digest"]);
    home.ok(&args);
    assert_eq!(sidecar_digest(&out), python_content_digest(&out));
    assert_eq!(files_in(&dir), ["d.raw", "d.raw.digest"]);
}

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped; `None` (with the
/// reason printed) where mounting is not allowed.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "snapport-test",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir)),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs to fill up (not root?): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_file_system_leaves_nothing_under_any_name() {
    let home = lab();
    // The data does not fit: every format fails while writing it.
    if let Some(fs) = Tmpfs::mount("16m") {
        for (ext, args, _) in FORMATS {
            let out = fs.path().join(format!("out.{ext}"));
            let mut all: Vec<&str> = args.to_vec();
            all.extend(["-q", "-o", p(&out)]);
            let err = home.fails(&all);
            assert!(err.contains("No space left on device"), "{ext}: {err}");
            assert!(
                files_in(fs.path()).is_empty(),
                "{ext}: {:?}",
                files_in(fs.path())
            );
        }
    }
    // The output fits exactly (1 MiB of data in a 1 MiB file system): the digest sidecar
    // does not. Neither appears.
    if let Some(fs) = Tmpfs::mount("1m") {
        let out = fs.path().join("small.raw");
        let err = home.fails(&["download", "vd/small", "-q", "-o", p(&out)]);
        assert!(
            err.contains("small.raw.digest") && err.contains("No space left on device"),
            "{err}"
        );
        assert!(files_in(fs.path()).is_empty(), "{:?}", files_in(fs.path()));
        // With room, the same export is whole.
        let out = home.out("small.raw");
        home.ok(&["download", "vd/small", "-q", "-o", p(&out)]);
        assert_eq!(
            files_in(out.parent().unwrap()),
            ["small.raw", "small.raw.digest"]
        );
    }
}

/// The files `pid` has open in `dir`, as /proc/PID/fd/N paths.
fn open_in(pid: u32, dir: &Path) -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .map(|fd| fd.path())
        .filter(|fd| std::fs::read_link(fd).is_ok_and(|t| t.starts_with(dir)))
        .collect()
}

/// The descriptor path (/proc/PID/fd/N) of a file `child` has open in `dir`, once it
/// has one.
fn wait_for_output(child: &mut Child, dir: &Path) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(fd) = open_in(child.id(), dir).pop() {
            return fd;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended before it wrote anything"
        );
        assert!(Instant::now() < deadline, "the export never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigint_and_sigterm_say_so_and_leave_nothing() {
    let home = Home::new();
    let img = home.pool().join("big.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "1T"]);
    qemu_io(&img, "qcow2", &["write -P 1 0 1m"]);
    for (signal, name, code) in [
        (libc::SIGINT, "SIGINT", 130),
        (libc::SIGTERM, "SIGTERM", 143),
    ] {
        let out = home.out("big.raw");
        let dir = out.parent().unwrap().to_path_buf();
        // --sha256sum over 1 TiB of zeros takes minutes: time enough to interrupt it.
        let mut child = snapport_cmd(
            &home,
            &["download", "vd/big", "-q", "--sha256sum", "-o", p(&out)],
        )
        .spawn()
        .unwrap();
        // The output is open (unnamed): the export is under way.
        let fd = wait_for_output(&mut child, &dir);
        assert!(
            std::fs::read_link(&fd)
                .unwrap()
                .to_string_lossy()
                .ends_with("(deleted)"),
            "the output in the making has a name"
        );
        assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
        // SAFETY: signals a process this test started.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let done = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert_eq!(done.status.code(), Some(code), "{name}: {stderr}");
        assert_eq!(
            stderr.lines().collect::<Vec<_>>(),
            [format!(
                "snapport: interrupted ({name}); nothing was written under {}",
                out.display()
            )],
            "{name}"
        );
        assert!(files_in(&dir).is_empty(), "{name}: {:?}", files_in(&dir));
    }
}

#[test]
fn an_existing_output_is_replaced_only_with_force() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "64M"]);
    qemu_io(&img, "qcow2", &["write -P 0x42 1M 3M"]);
    let out = home.out("d.raw");
    let before = home.out("before");
    std::fs::write(&out, b"the user's file").unwrap();
    std::fs::write(&before, b"the user's file").unwrap();

    let err = home.fails(&["download", "vd/d", "-q", "-o", p(&out)]);
    assert!(
        err.contains(&out.display().to_string()) && err.contains("--force"),
        "{err}"
    );
    tool("cmp", &[p(&out), p(&before)]);
    assert_eq!(files_in(out.parent().unwrap()), ["before", "d.raw"]);

    // --force: the new export, byte for byte what a fresh export writes, digest too.
    home.ok(&["download", "vd/d", "-q", "--force", "-o", p(&out)]);
    let fresh = home.out("fresh.raw");
    home.ok(&["download", "vd/d", "-q", "-o", p(&fresh)]);
    tool("cmp", &[p(&out), p(&fresh)]);
    assert_eq!(sidecar_digest(&out), sidecar_digest(&fresh));

    // Sidecars without their output (of an export since removed, or left by a killed
    // one) describe nothing: a new export replaces them, or removes one it does not write.
    std::fs::remove_file(&out).unwrap();
    std::fs::write(home.out("d.raw.digest"), b"stale").unwrap();
    let sum = home.out("d.raw.sha256");
    std::fs::write(&sum, b"stale").unwrap();
    home.ok(&["download", "vd/d", "-q", "-o", p(&out)]);
    assert!(!sum.exists());
    tool("cmp", &[p(&out), p(&fresh)]);
    assert_eq!(sidecar_digest(&out), sidecar_digest(&fresh));

    // Every command that writes a file the user names: bundles, deltas, fetch.
    let cfg = home.path().join("vm.json");
    std::fs::write(&cfg, r#"{"name":"web","disks":[{"name":"d"}]}"#).unwrap();
    home.ok(&["create", "vm/web", "--config", p(&cfg), "-q"]);
    home.ok(&["snapshot", "create", "vd/d", "--name", "s1", "-q"]);
    home.ok(&["snapshot", "create", "vd/d", "--name", "s2", "-q"]);
    for args in [
        vec!["download", "vm/web"],
        vec!["download", "vds/d@s2", "--since", "vds/d@s1"],
        vec!["fetch", "https://127.0.0.1:1/d.raw?token=x"],
    ] {
        let mut all = args.clone();
        all.extend(["-q", "-o", p(&before)]);
        let err = home.fails(&all);
        assert!(
            err.contains("before") && err.contains("--force"),
            "{args:?}: {err}"
        );
        assert_eq!(std::fs::read(&before).unwrap(), b"the user's file");
    }
    let tar = home.out("web.tar");
    home.ok(&["download", "vm/web", "-q", "-o", p(&tar)]);
    home.fails(&["download", "vm/web", "-q", "-o", p(&tar)]);
    home.ok(&["download", "vm/web", "-q", "--force", "-o", p(&tar)]);
    tool("tar", &["-tf", p(&tar)]);
}

#[test]
fn a_pools_own_files_are_never_written_even_with_force() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "64M"]);
    qemu_io(&img, "qcow2", &["write -P 0x42 1M 3M"]);
    let other = home.pool().join("other.qcow2");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&other), "64M"],
    );
    qemu_io(&other, "qcow2", &["write -P 0x24 0 1M"]);
    // A pool of one granted device (a raw file outside any pool folder).
    let device = home.out("device.img");
    tool("qemu-img", &["create", "-q", "-f", "raw", p(&device), "8M"]);
    home.write_config(&format!(
        "[pools.dev]\nplugin = \"raw\"\ndevices = {{ disk = \"{}\" }}\n",
        device.display()
    ));
    let keep = |f: &Path| {
        let copy = home
            .path()
            .join(format!("{}.copy", f.file_name().unwrap().to_string_lossy()));
        std::fs::copy(f, &copy).unwrap();
        copy
    };
    let (img_copy, other_copy, device_copy) = (keep(&img), keep(&other), keep(&device));

    // The disk itself, through a symlink, through a hard link elsewhere, a new name in
    // the pool's folder, a name in it reached through a symlinked folder, the device.
    let link = home.out("link.raw");
    std::os::unix::fs::symlink(&other, &link).unwrap();
    let hard = home.out("hard.raw");
    std::fs::hard_link(&other, &hard).unwrap();
    let folder_link = home.out("poolfolder");
    std::os::unix::fs::symlink(home.pool(), &folder_link).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (other.clone(), "pool default"),
        (link, "pool default"),
        (hard, "pool default"),
        (home.pool().join("new.raw"), "pool default"),
        (folder_link.join("new.raw"), "pool default"),
        (device.clone(), "pool dev"),
    ];
    for (target, pool) in &cases {
        for format in ["raw", "qcow2"] {
            let err = home.fails(&[
                "download",
                "vd/d",
                "--format",
                format,
                "-q",
                "--force",
                "-o",
                p(target),
            ]);
            assert!(
                err.contains(pool) && err.contains("never writes over a pool's files"),
                "{}: {err}",
                target.display()
            );
        }
    }
    assert!(!home.pool().join("new.raw").exists());
    assert!(!home.pool().join("new.raw.digest").exists());
    tool("cmp", &[p(&img), p(&img_copy)]);
    tool("cmp", &[p(&other), p(&other_copy)]);
    tool("cmp", &[p(&device), p(&device_copy)]);
    let listed: serde_json::Value =
        serde_json::from_slice(&home.ok(&["get", "vd", "-o", "json"]).stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vd/d", "vd/other"]);
}

#[test]
fn stdout_exports_are_unaffected() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "64M"]);
    qemu_io(&img, "qcow2", &["write -P 0x42 1M 3M"]);
    let cwd = home.out("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let streamed = home.out("streamed.raw");
    let file = std::fs::File::create(&streamed).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["download", "vd/d", "-q", "-o", "-"])
        .env("SNAPPORT_HOME", home.path())
        .current_dir(&cwd)
        .stdout(file)
        .status()
        .unwrap();
    assert!(status.success());
    let written = home.out("written.raw");
    home.ok(&["download", "vd/d", "-q", "-o", p(&written)]);
    tool("cmp", &[p(&streamed), p(&written)]);
    assert!(files_in(&cwd).is_empty(), "{:?}", files_in(&cwd));
}

#[test]
fn what_a_killed_process_left_is_swept_by_the_next_export_into_the_folder() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "16M"]);
    qemu_io(&img, "qcow2", &["write -P 0x42 1M 1M"]);
    // Hidden names as a file system without unnamed files gets them: one of a process
    // that is gone, one of a process that runs (this test's).
    let dead = Command::new("true")
        .spawn()
        .and_then(|mut c| c.wait().map(|_| c.id()))
        .unwrap();
    let dir = home.out("x").parent().unwrap().to_path_buf();
    let stale = dir.join(format!(".old.raw.snapport-{dead}"));
    let live = dir.join(format!(".busy.raw.snapport-{}", std::process::id()));
    std::fs::write(&stale, b"left by kill -9").unwrap();
    std::fs::write(&live, b"still being written").unwrap();
    home.ok(&["download", "vd/d", "-q", "-o", p(&dir.join("d.raw"))]);
    assert!(!stale.exists());
    assert!(live.exists());
}
