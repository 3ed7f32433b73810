//! The backend conformance suite (`common/conformance.rs`, which ends with the product's
//! own `snapport plugin test` on the pool) on the qcow2 plugin's pool (qcow2 disks made by
//! qemu-img: plain, compressed, a backing chain, internal snapshots with writes and
//! zeroed ranges between them, and a raw file) and on the raw plugin's pool (two files in
//! a folder and a granted device). `tests/lvm.rs` and `tests/csi.rs` run the same suite on
//! the lvm and csi plugins.
//!
//! Then `snapport plugin test` itself: it passes the bundled plugins in scratch pools of
//! its own, fails a deliberately broken plugin (`tests/plugins/broken`) with the named
//! case of each misdeed, refuses files that are not components in one line, writes into
//! an operator's folder only when asked, and leaves no scratch pool behind, even when
//! interrupted.

mod common;
#[path = "common/conformance.rs"]
mod conformance;

use common::*;
use conformance::status;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[test]
fn the_qcow2_pool_conforms() {
    let home = Home::new();
    let pool = home.pool();
    let d = pool.join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&d), "24M"]);
    qemu_io(
        &d,
        "qcow2",
        &["write -P 0x11 0 5M", "write -P 0x12 9M 300k"],
    );
    tool("qemu-img", &["snapshot", "-c", "s1", p(&d)]);
    qemu_io(
        &d,
        "qcow2",
        &[
            "write -P 0x21 1M 64k",
            "write -z 9M 128k",
            "write -P 0x22 20M 1M",
        ],
    );
    tool("qemu-img", &["snapshot", "-c", "s2", p(&d)]);
    qemu_io(&d, "qcow2", &["write -P 0x31 2M 1M"]);

    let plain = home.out("plain.raw");
    std::fs::File::create(&plain)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    qemu_io(&plain, "raw", &["write -P 0x41 1M 2M"]);
    let packed = pool.join("packed.qcow2");
    tool(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            p(&plain),
            p(&packed),
        ],
    );
    let base = pool.join("base.qcow2");
    tool(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", p(&plain), p(&base)],
    );
    let top = pool.join("top.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            p(&top),
        ],
    );
    qemu_io(&top, "qcow2", &["write -P 0x51 2M 64k"]);
    std::fs::copy(&plain, pool.join("r.raw")).unwrap();

    let checked = conformance::check_pool(&home, "default", true);
    assert_eq!(
        (checked.disks, checked.snapshots, checked.deltas),
        (5, 2, 1),
        "{checked:?}"
    );
}

#[test]
fn the_raw_pool_conforms() {
    raw_pool_conforms("raw");
}

/// A plugin built against an earlier WIT of the series (the raw plugin's own source
/// against the frozen wit/v0.1.0) loads on this host and passes the same suite.
#[test]
fn a_plugin_built_against_wit_0_1_0_still_conforms() {
    let plugin = "test-raw-v0.1.0";
    let home = raw_pool_conforms(plugin);
    let out = home.ok(&["plugin", "inspect", plugin, "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["wit"], "snapport:backend@0.1.0", "{doc}");
    let out = home.ok(&["plugin", "inspect", "raw", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(doc["wit"], "snapport:backend@0.1.0", "{doc}");
}

/// A folder of raw files and a granted device, served by `plugin`.
fn raw_pool_conforms(plugin: &str) -> Home {
    let home = Home::new();
    let dir = home.path().join("raw");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, mib) in [("a.raw", 6u64), ("b.raw", 3), ("lun.img", 5)] {
        let f = dir.join(name);
        std::fs::File::create(&f)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        qemu_io(&f, "raw", &["write -P 0x5a 512k 1M"]);
    }
    home.write_config(&format!(
        "[pools.r]\nplugin = \"{plugin}\"\nfolders = [\"{}\"]\ndevices = {{ lun0 = \"{}\" }}\n",
        dir.display(),
        dir.join("lun.img").display()
    ));
    let checked = conformance::check_pool(&home, "r", false);
    assert_eq!(checked.disks, 3, "{checked:?}");
    home
}

/// `snapport plugin test ARGS -o json` with `TMPDIR` = `tmp`: (exit code, report or
/// null, stderr).
fn plugin_test(home: &Home, tmp: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["plugin", "test"])
        .args(args)
        .args(["-o", "json"])
        .env("SNAPPORT_HOME", home.path())
        .env("TMPDIR", tmp)
        .env_remove("SNAPPORT_PLUGIN_PATH")
        .output()
        .expect("running snapport");
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The cases of a report with `status`, by name.
fn with_status(report: &serde_json::Value, status: &str) -> BTreeSet<String> {
    report["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no cases in {report}"))
        .iter()
        .filter(|c| c["status"] == status)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn detail<'a>(report: &'a serde_json::Value, name: &str) -> &'a str {
    report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["detail"].as_str())
        .unwrap_or_else(|| panic!("no case {name} in {report}"))
}

/// A folder for `TMPDIR`, which must be empty again after each run: the scratch pool
/// goes away.
fn tmp(home: &Home) -> PathBuf {
    let t = home.path().join("tmp");
    std::fs::create_dir_all(&t).unwrap();
    t
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

/// Each bundled plugin passes in a scratch pool of the suite's own, every case its
/// capabilities call for running (not skipped), and the scratch pool is gone after.
#[test]
fn plugin_test_passes_the_bundled_plugins_in_a_scratch_pool() {
    let home = Home::new();
    let t = tmp(&home);
    let always = [
        "load.component",
        "load.info",
        "load.capabilities",
        "write.create",
        "write.read-back",
        "write.conflict",
        "write.uncommitted",
        "write.awkward-size",
        "list.volumes",
        "read.whole",
        "read.repeatable",
        "robust.missing-volume",
        "robust.map-past-end",
        "volume.delete",
        "robust.error-text",
    ];
    for (plugin, also) in [
        (
            "qcow2",
            &[
                "extents.honest",
                "extents.paging",
                "snapshot.create",
                "snapshot.read-old",
                "snapshot.changed-extents",
                "snapshot.restore",
                "snapshot.conflict",
                "snapshot.delete",
                "clone.reads-parent",
                "clone.parent-untouched",
            ][..],
        ),
        (
            "raw",
            &[
                "unsupported.snapshot-create",
                "unsupported.changed-blocks",
                "unsupported.thin-clone",
            ][..],
        ),
    ] {
        let (code, report, stderr) = plugin_test(&home, &t, &[plugin]);
        assert_eq!(code, Some(0), "plugin test {plugin}: {stderr}\n{report:#}");
        let passed = with_status(&report, "ok");
        for case in always.iter().chain(also) {
            assert!(
                passed.contains(*case),
                "{plugin}: {case} did not pass: {report:#}"
            );
        }
        assert_eq!(report["failed"], 0, "{report:#}");
        assert!(
            empty(&t),
            "plugin test {plugin} left its scratch pool in {}",
            t.display()
        );
    }
    // Every other plugin built into target/plugins (the C plugin among them) passes too;
    // lvm and csi need a volume group or a CSI driver to serve, and pass on theirs in
    // tests/lvm.rs and tests/csi.rs (`conformance::check_pool`).
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_snapport"));
    let bundled = exe.parent().unwrap().join("../plugins");
    let mut others = 0;
    for entry in std::fs::read_dir(&bundled).unwrap().flatten() {
        let path = entry.path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let tested = ["qcow2", "raw", "lvm", "csi"].contains(&stem.as_str());
        if tested || stem.starts_with("test-") || path.extension().is_none_or(|x| x != "wasm") {
            continue;
        }
        let (code, report, stderr) = plugin_test(&home, &t, &[p(&path)]);
        assert_eq!(code, Some(0), "plugin test {stem}: {stderr}\n{report:#}");
        assert_eq!(
            status(&report, "write.read-back"),
            "ok",
            "{stem}: {report:#}"
        );
        assert!(empty(&t), "plugin test {stem} left its scratch pool");
        others += 1;
    }
    // The C plugin (files-c) at least: a run that found none would vouch for nothing.
    assert!(
        others >= 1,
        "no other plugin found in {}: the C plugin was not built",
        bundled.display()
    );
    eprintln!(
        "plugin test passed {others} more plugins of {}",
        bundled.display()
    );

    // A file given by path works as a name on the plugin path does.
    let raw = home.out("copy.wasm");
    std::fs::copy(bundled.join("raw.wasm"), &raw).unwrap();
    let (code, report, stderr) = plugin_test(&home, &t, &[p(&raw)]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["plugin"], "raw");
}

/// The broken plugin fails with the named cases of each misdeed, exit 1, and an error
/// line naming them; honest, it passes.
#[test]
fn plugin_test_fails_a_broken_plugin_with_named_cases() {
    let home = Home::new();
    let t = tmp(&home);
    let run = |behaviour: &str| {
        let setting = format!("behaviour={behaviour}");
        plugin_test(&home, &t, &["test-broken", "--setting", &setting])
    };
    let (code, report, stderr) = run("honest");
    assert_eq!(code, Some(0), "{stderr}\n{report:#}");

    for (behaviour, expected) in [
        (
            "wrong-bytes",
            &["write.read-back", "write.awkward-size"][..],
        ),
        (
            "lying-extents",
            &["write.read-back", "extents.honest", "write.awkward-size"][..],
        ),
        (
            "bad-unsupported",
            &[
                "unsupported.snapshot-delete",
                "unsupported.snapshot-restore",
            ][..],
        ),
        // Refusing to make any volume in the suite's own writable pool is no excuse:
        // skipping every write case would let it pass.
        (
            "refuse",
            &[
                "write.create",
                "write.uncommitted",
                "write.awkward-size",
                "read.open",
            ][..],
        ),
    ] {
        let (code, report, stderr) = run(behaviour);
        let failed = with_status(&report, "fail");
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(failed, expected, "{behaviour}: {report:#}");
        assert_eq!(code, Some(1), "{behaviour}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{behaviour}: {stderr}");
        for case in &expected {
            assert!(lines[0].contains(case.as_str()), "{behaviour}: {stderr}");
        }
        assert!(empty(&t), "{behaviour}: the scratch pool is left");
    }
    let (_, report, _) = run("wrong-bytes");
    assert!(
        detail(&report, "write.read-back").contains("offset 0"),
        "{report:#}"
    );
    let (_, report, _) = run("lying-extents");
    assert!(
        detail(&report, "extents.honest").contains("[0, 65536)"),
        "{report:#}"
    );

    // Errors without words: every case that met one says so, and the summary case too.
    let (code, report, _) = run("no-text");
    assert_eq!(code, Some(1));
    let failed = with_status(&report, "fail");
    for case in [
        "robust.missing-volume",
        "write.conflict",
        "unsupported.snapshot-create",
        "robust.error-text",
    ] {
        assert!(failed.contains(case), "no-text: {case} passed: {report:#}");
    }
    for case in failed.iter().filter(|c| *c != "robust.error-text") {
        assert!(
            detail(&report, case).contains("without text"),
            "{case}: {report:#}"
        );
    }

    // A panic: the case that met it fails with the plugin's own message.
    let (code, report, _) = run("panic");
    assert_eq!(code, Some(1));
    assert!(
        with_status(&report, "fail").contains("list.volumes"),
        "{report:#}"
    );
    let why = detail(&report, "list.volumes");
    assert!(
        why.contains("panics in list-volumes on purpose"),
        "the panic's message is lost: {why}"
    );
}

/// What is not a plugin component: one error line, exit 1, no scratch pool left.
#[test]
fn plugin_test_refuses_files_that_are_not_components() {
    let home = Home::new();
    let t = tmp(&home);
    let mut random = vec![0u8; 4096];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    // The smallest core module: magic and version 1, no sections.
    let core = b"\0asm\x01\0\0\0".to_vec();
    for (name, bytes) in [
        ("empty.wasm", Vec::new()),
        ("random.wasm", random),
        ("core.wasm", core),
    ] {
        let f = home.out(name);
        std::fs::write(&f, bytes).unwrap();
        let (code, report, stderr) = plugin_test(&home, &t, &[p(&f)]);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert_eq!(report, serde_json::Value::Null, "{name}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: {stderr}");
        assert!(
            lines[0].starts_with("snapport: error: ") && lines[0].contains(name),
            "{stderr}"
        );
        assert!(empty(&t), "{name}: a scratch pool is left");
    }
    let err = home.fails(&["plugin", "test", "/nonexistent/x.wasm"]);
    assert!(err.contains("/nonexistent/x.wasm"), "{err}");
    let err = home.usage_fails(&["plugin", "test", "test-broken", "--setting", "novalue"]);
    assert!(
        err.contains("--setting") && err.contains("KEY=VALUE"),
        "{err}"
    );
}

/// On an operator's folder the suite writes only with --writable, and then leaves the
/// folder as it found it.
#[test]
fn plugin_test_writes_into_an_operators_folder_only_when_asked() {
    let home = Home::new();
    let t = tmp(&home);
    let dir = home.path().join("disks");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("keep.raw");
    std::fs::File::create(&f).unwrap().set_len(3 << 20).unwrap();
    qemu_io(&f, "raw", &["write -P 0x5a 512k 1M"]);
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = (listing(), std::fs::read(&f).unwrap());

    let (code, report, stderr) = plugin_test(&home, &t, &["raw", "--folder", p(&dir)]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(status(&report, "write.create"), "skip", "{report:#}");
    assert!(
        detail(&report, "write.create").contains("--writable"),
        "{report:#}"
    );
    assert_eq!(status(&report, "read.whole"), "ok", "{report:#}");
    assert!(detail(&report, "read.open").starts_with("1 "), "{report:#}");

    let (code, report, stderr) =
        plugin_test(&home, &t, &["raw", "--folder", p(&dir), "--writable"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(status(&report, "write.read-back"), "ok", "{report:#}");
    assert_eq!(status(&report, "cleanup"), "ok", "{report:#}");
    assert!(
        before == (listing(), std::fs::read(&f).unwrap()),
        "the folder changed: {:?}",
        listing()
    );
}

/// Ctrl-C in the middle of the suite: the scratch pool, files the plugin made in it
/// included, is removed, and the command ends as interrupted commands do (130).
#[test]
fn an_interrupted_plugin_test_removes_its_scratch_pool() {
    let home = Home::new();
    let t = tmp(&home);
    let mut child = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args([
            "plugin",
            "test",
            "test-broken",
            "--setting",
            "behaviour=slow",
        ])
        .env("SNAPPORT_HOME", home.path())
        .env("TMPDIR", &t)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first volume the suite commits there (the plugin then spins in
    // list-volumes for seconds).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let holds_a_volume = || {
        std::fs::read_dir(&t).unwrap().flatten().any(|scratch| {
            std::fs::read_dir(scratch.path())
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with("-a.img"))
                })
                .unwrap_or(false)
        })
    };
    while !holds_a_volume() {
        assert!(
            std::time::Instant::now() < deadline,
            "no volume appeared in {}",
            t.display()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "plugin test ended before it was interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill(2) on the child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        empty(&t),
        "the scratch pool outlived Ctrl-C: {:?}",
        std::fs::read_dir(&t)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect::<Vec<_>>()
    );
}

/// A run killed outright (SIGKILL: no handler runs) leaves its scratch pool; the next
/// run removes it, whatever it holds, but never a pool another run holds locked (a run
/// in another PID namespace sharing the folder, whose PID says nothing here).
#[test]
fn plugin_test_sweeps_the_scratch_pools_of_killed_runs_only() {
    let home = Home::new();
    let t = tmp(&home);
    // A killed run's pool: deep, with files, named with a PID that is alive (ours).
    let dead = t.join(format!("snapport-plugin-test-{}-7", std::process::id()));
    std::fs::create_dir_all(dead.join("a/b/c")).unwrap();
    std::fs::write(dead.join("a/b/c/vol.raw"), b"left").unwrap();
    // A live run's pool: locked as `plugin test` locks its own, by a PID that is gone.
    let live = t.join("snapport-plugin-test-999999999-0");
    std::fs::create_dir_all(live.join("x")).unwrap();
    let held = std::fs::File::open(&live).unwrap();
    held.try_lock().unwrap();
    // Not a scratch pool at all, by its name.
    let other = t.join("snapport-plugin-test-notes");
    std::fs::create_dir(&other).unwrap();

    let (code, _, stderr) = plugin_test(&home, &t, &["raw"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!dead.exists(), "the killed run's pool is left");
    assert!(live.join("x").is_dir(), "a locked pool was removed");
    assert!(other.is_dir(), "a folder not named as a pool was removed");
    drop(held);
}
