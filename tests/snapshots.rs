//! Disk snapshots on a qcow2 pool, judged by QEMU: `qemu-img snapshot -l` lists what
//! snapport made, `qemu-img check` finds every refcount and flag right, and exports and
//! restores compare identical (`qemu-img compare`) with what `qemu-img convert` reads.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Names `qemu-img snapshot -l` lists.
fn qemu_listed(img: &Path) -> Vec<String> {
    tool("qemu-img", &["snapshot", "-l", p(img)])
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

/// `qemu-img check` must report neither errors nor leaks.
fn check(img: &Path) {
    let out = std::process::Command::new("qemu-img")
        .args(["check", p(img)])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn active_raw(img: &Path, to: &Path) {
    let _ = std::fs::remove_file(to);
    tool("qemu-img", &["convert", "-O", "raw", p(img), p(to)]);
}

fn same(a: &Path, b: &Path) {
    tool(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", p(a), p(b)],
    );
}

fn snapshots(home: &Home) -> Vec<Value> {
    json(&home.ok(&["get", "vds", "-o", "json"]))
        .as_array()
        .unwrap()
        .clone()
}

fn phase_of(home: &Home, address: &str) -> Option<String> {
    snapshots(home)
        .iter()
        .find(|s| s["name"] == address)
        .map(|s| s["phase"].as_str().unwrap().to_owned())
}

fn sha256(path: &Path) -> String {
    tool("sha256sum", &[p(path)])
}

#[test]
fn lifecycle_limit_restore_and_delete() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "64M"]);
    qemu_io(
        &img,
        "qcow2",
        &[
            "write -P 0x11 0 4M",
            "write -c -P 0x12 8M 64k",
            "write -z 9M 1M",
        ],
    );
    let a = home.out("a.raw");
    active_raw(&img, &a);

    let s1 = json(&home.ok(&["snapshot", "create", "vd/d", "--name", "s1", "-o", "json"]));
    assert_eq!(s1["name"], "vds/d@s1");
    assert_eq!(s1["phase"], "Ready");
    // Nobody had the disk open: taken offline, it is consistent.
    assert_eq!(s1["consistent"], true);
    check(&img);

    qemu_io(
        &img,
        "qcow2",
        &["write -P 0x22 1M 2M", "write -P 0x23 30M 1M"],
    );
    let b = home.out("b.raw");
    active_raw(&img, &b);
    home.ok(&[
        "snapshot",
        "create",
        "vd/d",
        "--name",
        "s2",
        "--comment",
        "before the upgrade",
        "-q",
    ]);
    // A snapshot QEMU makes is one of the disk's like any other.
    tool("qemu-img", &["snapshot", "-c", "q3", p(&img)]);
    assert_eq!(qemu_listed(&img), ["s1", "s2", "q3"]);
    check(&img);

    let listed = snapshots(&home);
    let names: Vec<&str> = listed.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["vds/d@s1", "vds/d@s2", "vds/d@q3"]);
    assert!(listed.iter().all(|s| s["phase"] == "Ready"), "{listed:?}");

    // The default limit is 3: the fourth is refused and nothing changes.
    let err = home.fails(&["snapshot", "create", "vd/d", "--name", "s4"]);
    assert!(err.contains("limit"), "{err}");
    assert_eq!(qemu_listed(&img), ["s1", "s2", "q3"]);

    // Exports of the snapshots are what QEMU reads in them.
    for (snap, want) in [("s1", &a), ("s2", &b)] {
        let got = home.out(&format!("{snap}.raw"));
        home.ok(&["download", &format!("vds/d@{snap}"), "-o", p(&got), "-q"]);
        same(want, &got);
    }

    let s2 = json(&home.ok(&["describe", "vds/d@s2", "-o", "json"]));
    assert_eq!(s2["comment"], "before the upgrade");
    assert_eq!(s2["parent"], "vds/d@s1");
    let text = String::from_utf8(home.ok(&["describe", "vds/d@s2"]).stdout).unwrap();
    assert!(text.contains("Parent:      vds/d@s1"), "{text}");

    // The tree: s2 under s1, the disk's present under s2, q3 (no record) at the top.
    let tree = String::from_utf8(home.ok(&["tree", "vd/d"]).stdout).unwrap();
    let indent = |name: &str| {
        let line = tree
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not in\n{tree}"));
        line.find(name).unwrap()
    };
    assert!(indent("s2") > indent("s1"), "{tree}");
    assert!(indent("(now)") > indent("s2"), "{tree}");
    assert_eq!(indent("q3"), indent("s1"), "{tree}");

    // Restore. The dry run (the default) changes nothing and reports the newer snapshots.
    qemu_io(&img, "qcow2", &["write -P 0x33 0 8M"]);
    let before = (sha256(&img), files_in(&home.pool()));
    let dry = json(&home.ok(&["restore", "vd/d", "--from", "vds/d@s1", "-o", "json"]));
    assert_eq!(dry["restored"], false);
    assert_eq!(dry["mode"], "DryRun");
    let conflicts = dry["conflicts"].to_string();
    assert!(
        conflicts.contains("vds/d@s2") && conflicts.contains("vds/d@q3"),
        "{conflicts}"
    );
    assert_eq!(before, (sha256(&img), files_in(&home.pool())));
    // Strict refuses them, and changes nothing either.
    let err = home.fails(&["restore", "vd/d", "--from", "vds/d@s1", "--mode", "strict"]);
    assert!(err.contains("vds/d@s2"), "{err}");
    assert_eq!(before, (sha256(&img), files_in(&home.pool())));
    // Another disk's snapshot is no source for this one.
    let err = home.fails(&[
        "restore",
        "vd/d",
        "--from",
        "vds/other@s1",
        "--mode",
        "strict",
    ]);
    assert!(err.contains("not of vd/d"), "{err}");
    // Best effort restores and reports what it set aside.
    let done = json(&home.ok(&[
        "restore",
        "vd/d",
        "--from",
        "vds/d@s1",
        "--mode",
        "best-effort",
        "-o",
        "json",
    ]));
    assert_eq!(done["restored"], true);
    assert!(done["conflicts"].to_string().contains("vds/d@s2"));
    check(&img);
    tool("qemu-img", &["compare", "-F", "raw", p(&img), p(&a)]);
    // The disk's present now hangs under s1.
    let tree = String::from_utf8(home.ok(&["tree", "vd/d"]).stdout).unwrap();
    let now = tree.lines().position(|l| l.contains("(now)")).unwrap();
    let s1_line = tree.lines().position(|l| l.contains("s1")).unwrap();
    let s2_line = tree.lines().position(|l| l.contains("s2")).unwrap();
    assert!(now > s2_line && s2_line > s1_line, "{tree}");
    // Guest writes after the restore leave every snapshot whole.
    qemu_io(&img, "qcow2", &["write -P 0x44 2M 4M"]);
    check(&img);

    // Delete: gone from QEMU's list, the image checks clean, the others still export.
    home.ok(&["delete", "vds/d@s2", "-q"]);
    assert_eq!(qemu_listed(&img), ["s1", "q3"]);
    check(&img);
    let got = home.out("s1.again.raw");
    home.ok(&["download", "vds/d@s1", "-o", p(&got), "-q"]);
    same(&a, &got);
    let err = home.fails(&["delete", "vds/d@s2"]);
    assert!(err.contains("no vds/d@s2"), "{err}");

    // A lower limit keeps what the disk has and refuses new ones.
    home.write_config(
        "[pools.default]\nplugin = \"qcow2\"\nfolders = [\"default\"]\nwritable = true\nsnapshot_limit = 1\n",
    );
    let err = home.fails(&["snapshot", "create", "vd/d", "--name", "s5"]);
    assert!(err.contains("snapshot_limit = 1"), "{err}");
    assert_eq!(qemu_listed(&img), ["s1", "q3"]);
    check(&img);
}

#[test]
fn phases_failed_and_terminating_show_in_json() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "16M"]);
    qemu_io(&img, "qcow2", &["write -P 0x11 0 1M"]);

    // Required consistency that a hook cannot give: Failed, recorded with why, nothing
    // made.
    let err = home.fails(&[
        "snapshot",
        "create",
        "vd/d",
        "--name",
        "x",
        "--consistency",
        "required",
        "--pre-hook",
        "exit 3",
    ]);
    assert!(err.contains("pre hook `exit 3` failed"), "{err}");
    let listed = snapshots(&home);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["phase"], "Failed");
    assert!(listed[0]["error"].as_str().unwrap().contains("exit 3"));
    assert!(qemu_listed(&img).is_empty());
    // A failed one does not count towards the limit, and can be removed.
    home.ok(&["delete", "vds/d@x", "-q"]);
    assert!(snapshots(&home).is_empty());

    // The default name is the UTC date and time to the millisecond, 20261207-004423.864.
    let made = json(&home.ok(&["snapshot", "create", "vd/d", "-o", "json"]));
    let name = made["snapshot"].as_str().unwrap().to_owned();
    assert!(
        name.len() == 19
            && name.as_bytes()[8] == b'-'
            && name.as_bytes()[15] == b'.'
            && name.chars().filter(char::is_ascii_digit).count() == 17,
        "{name}"
    );
    assert_eq!(qemu_listed(&img), [name.as_str()]);

    // A delete the pool cannot carry out leaves it Terminating, with the reason.
    home.write_config(
        "[pools.default]\nplugin = \"qcow2\"\nfolders = [\"default\"]\nwritable = false\n",
    );
    let address = format!("vds/d@{name}");
    let err = home.fails(&["delete", &address]);
    assert!(err.contains("read-only"), "{err}");
    assert_eq!(phase_of(&home, &address).as_deref(), Some("Terminating"));
    assert_eq!(qemu_listed(&img), [name.as_str()]);
    // And a retry once it can finishes the job.
    home.write_config(
        "[pools.default]\nplugin = \"qcow2\"\nfolders = [\"default\"]\nwritable = true\n",
    );
    home.ok(&["delete", &address, "-q"]);
    assert!(snapshots(&home).is_empty());
    assert!(qemu_listed(&img).is_empty());
    check(&img);
}

#[test]
fn what_cannot_be_snapshotted_is_refused_clearly() {
    let home = Home::new();
    std::fs::write(home.pool().join("r.raw"), vec![7u8; 1 << 20]).unwrap();
    let err = home.fails(&["snapshot", "create", "vd/r", "--name", "s"]);
    assert!(err.contains("raw file"), "{err}");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            p(&home.pool().join("base.image.qcow2")),
            "1M",
        ],
    );
    let err = home.fails(&["snapshot", "create", "vd/base"]);
    assert!(err.contains("read-only image"), "{err}");
    let err = home.fails(&["snapshot", "create", "vd/none"]);
    assert!(err.contains("no vd/none"), "{err}");
    for (bad, why) in [
        ("a/b", "not a valid name: it contains '/'"),
        ("a@b", "not a valid name: it contains '@'"),
        (".hidden", "not a valid name: it starts with '.'"),
        ("", "not a valid name: it is empty"),
        ("has space", "no spaces"),
    ] {
        let err = home.fails(&["snapshot", "create", "vd/r", "--name", bad]);
        assert!(err.contains(&format!("--name {bad:?}")), "{bad}: {err}");
        assert!(err.contains(why), "{bad}: {err}");
    }
    // None of it left a record behind.
    assert!(snapshots(&home).is_empty());
}

/// A QEMU guest agent on a Unix socket, answering the real protocol (JSON lines). It
/// logs each command with the number of snapshots the image had at that moment, and
/// fails `guest-fsfreeze-freeze` when told to.
struct FakeAgent {
    socket: std::path::PathBuf,
    log: std::sync::Arc<std::sync::Mutex<Vec<(String, usize)>>>,
    fail_freeze: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FakeAgent {
    fn start(dir: &Path, img: &Path) -> FakeAgent {
        use std::io::{BufRead, BufReader, Write};
        let socket = dir.join("qga.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let fail_freeze = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log2, fail2, img) = (log.clone(), fail_freeze.clone(), img.to_path_buf());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    let cmd: Value = serde_json::from_str(&line).unwrap();
                    line.clear();
                    let name = cmd["execute"].as_str().unwrap().to_owned();
                    // -U: snapport holds the image's write lock meanwhile.
                    let count = tool("qemu-img", &["snapshot", "-U", "-l", p(&img)])
                        .lines()
                        .skip(2)
                        .count();
                    log2.lock().unwrap().push((name.clone(), count));
                    let fail = fail2.load(std::sync::atomic::Ordering::SeqCst);
                    let answer = match name.as_str() {
                        // A stale answer first, as a channel an earlier client left may
                        // hold: the client must wait for its own id.
                        "guest-sync" => format!(
                            "{{\"return\": 4242}}\n{{\"return\": {}}}\n",
                            cmd["arguments"]["id"]
                        ),
                        "guest-fsfreeze-freeze" if fail => {
                            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"failed to freeze /: Device or resource busy\"}}\n".to_string()
                        }
                        _ => "{\"return\": 2}\n".to_string(),
                    };
                    conn.write_all(answer.as_bytes()).unwrap();
                }
            }
        });
        FakeAgent {
            socket,
            log,
            fail_freeze,
        }
    }

    fn take(&self) -> Vec<(String, usize)> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn calls(&self) -> Vec<String> {
        self.take().into_iter().map(|(c, _)| c).collect()
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn consistency_through_a_guest_agent_hooks_and_locks() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "16M"]);
    qemu_io(&img, "qcow2", &["write -P 0x11 0 1M"]);
    let agent = FakeAgent::start(home.path(), &img);
    let log = home.out("hooks.log");
    let pre1 = format!("echo pre1 >> {}", p(&log));
    let pre2 = format!(
        "echo pre2-$SNAPPORT_DISKS-$SNAPPORT_SNAPSHOT >> {}",
        p(&log)
    );
    let post = format!("echo post-$SNAPPORT_CONSISTENT >> {}", p(&log));
    let socket = p(&agent.socket).to_owned();
    let with = |name: &str, mode: &str| -> Vec<String> {
        [
            "snapshot",
            "create",
            "vd/d",
            "--name",
            name,
            "--consistency",
            mode,
            "--guest-agent",
            &socket,
            "--pre-hook",
            &pre1,
            "--pre-hook",
            &pre2,
            "--post-hook",
            &post,
            "-o",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    // Frozen around the snapshot: none at the freeze, one at the thaw; hooks in order.
    let made = json(&home.ok(&strs(&with("a", "required"))));
    assert_eq!(made["consistent"], true);
    assert_eq!(
        agent.take(),
        [
            ("guest-sync".to_string(), 0),
            ("guest-fsfreeze-freeze".to_string(), 0),
            ("guest-fsfreeze-thaw".to_string(), 1)
        ]
    );
    assert_eq!(lines(&log), ["pre1", "pre2-d-a", "post-true"]);
    std::fs::remove_file(&log).unwrap();

    // A failing freeze: `required` fails, and the guest is thawed all the same.
    agent
        .fail_freeze
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = home.fails(&strs(&with("b", "required")));
    assert!(err.contains("Device or resource busy"), "{err}");
    assert_eq!(
        agent.calls(),
        ["guest-sync", "guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
    );
    assert_eq!(lines(&log), ["pre1", "pre2-d-b", "post-false"]);
    assert_eq!(qemu_listed(&img), ["a"]);
    assert_eq!(phase_of(&home, "vds/d@b").as_deref(), Some("Failed"));
    std::fs::remove_file(&log).unwrap();
    // `best-effort` takes it, marked not consistent, thawed too.
    home.ok(&["delete", "vds/d@b", "-q"]);
    let made = json(&home.ok(&strs(&with("b", "best-effort"))));
    assert_eq!(made["consistent"], false);
    assert_eq!(
        agent.calls(),
        ["guest-sync", "guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
    );
    assert_eq!(qemu_listed(&img), ["a", "b"]);
    std::fs::remove_file(&log).unwrap();

    // A failing pre hook stops the hooks after it, is reported, and the post hooks run.
    let err = home.fails(&[
        "snapshot",
        "create",
        "vd/d",
        "--name",
        "c",
        "--consistency",
        "required",
        "--pre-hook",
        &pre1,
        "--pre-hook",
        "echo quiescing; exit 7",
        "--pre-hook",
        &pre2,
        "--post-hook",
        &post,
    ]);
    assert!(
        err.contains("pre hook `echo quiescing; exit 7` failed"),
        "{err}"
    );
    assert_eq!(lines(&log), ["pre1", "post-false"]);
    home.ok(&["delete", "vds/d@c", "-q"]);
    // A failing post hook is reported; the snapshot stands. (The limit is 3: make room.)
    home.ok(&["delete", "vds/d@b", "-q"]);
    let err = home.fails(&[
        "snapshot",
        "create",
        "vd/d",
        "--name",
        "c",
        "--post-hook",
        "exit 9",
    ]);
    assert!(
        err.contains("was created, but: post hook `exit 9` failed"),
        "{err}"
    );
    assert_eq!(qemu_listed(&img), ["a", "c"]);
    home.ok(&["delete", "vds/d@c", "-q"]);
    check(&img);

    // A disk QEMU has open: nothing freezes it, so `required` cannot hold; and snapport
    // never changes an image another process holds, whatever the mode.
    let mut holder = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", p(&img)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it holds its locks, asking the kernel (F_OFD_GETLK takes no lock): a
    // probe that locks, such as `qemu-img info`, can make qemu-io's own open fail ("Is
    // another process using the image?"), which CI saw once.
    let image = std::fs::File::open(&img).unwrap();
    let started = std::time::Instant::now();
    while !snapport_host::locks::in_use(&image).unwrap() {
        assert_eq!(holder.try_wait().unwrap(), None, "qemu-io exited");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "qemu-io took no lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(image);
    let err = home.fails(&[
        "snapshot",
        "create",
        "vd/d",
        "--name",
        "busy",
        "--consistency",
        "required",
    ]);
    let by = format!("in use by pid {}", holder.id());
    assert!(err.contains(&by) && err.contains("\"qmp\""), "{err}");
    let err = home.fails(&["snapshot", "create", "vd/d", "--name", "busy2"]);
    assert!(err.contains(&by), "{err}");
    // A refused attempt leaves no record behind.
    assert_eq!(phase_of(&home, "vds/d@busy"), None);
    assert_eq!(phase_of(&home, "vds/d@busy2"), None);
    drop(holder.stdin.take());
    holder.wait().unwrap();
    assert_eq!(qemu_listed(&img), ["a"]);
    check(&img);
    // Offline, a snapshot taken without freezing anything is consistent.
    let made = json(&home.ok(&[
        "snapshot",
        "create",
        "vd/d",
        "--name",
        "offline",
        "--consistency",
        "required",
        "-o",
        "json",
    ]));
    assert_eq!(made["consistent"], true);
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Rewrites the creation dates of `img`'s snapshots in its qcow2 snapshot table
/// (qcow2.txt: entry byte 16, seconds), as if they had been taken then.
fn set_dates(img: &Path, dates: &[(&str, u64)]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut h = [0u8; 12];
    f.read_exact_at(&mut h, 60).unwrap();
    let count = u32::from_be_bytes(h[0..4].try_into().unwrap());
    let mut at = u64::from_be_bytes(h[4..12].try_into().unwrap());
    for _ in 0..count {
        let mut e = [0u8; 40];
        f.read_exact_at(&mut e, at).unwrap();
        let id_len = u64::from(u16::from_be_bytes([e[12], e[13]]));
        let name_len = u16::from_be_bytes([e[14], e[15]]) as usize;
        let extra = u64::from(u32::from_be_bytes(e[36..40].try_into().unwrap()));
        let mut name = vec![0u8; name_len];
        f.read_exact_at(&mut name, at + 40 + extra + id_len)
            .unwrap();
        let name = String::from_utf8(name).unwrap();
        if let Some((_, secs)) = dates.iter().find(|(n, _)| *n == name) {
            let mut d = (*secs as u32).to_be_bytes().to_vec();
            d.extend([0u8; 4]);
            f.write_all_at(&d, at + 16).unwrap();
        }
        at = (at + 40 + extra + id_len + name_len as u64).next_multiple_of(8);
    }
}

#[test]
fn prune_removes_exactly_what_its_dry_run_listed() {
    let home = Home::new();
    home.write_config(
        "[pools.default]\nplugin = \"qcow2\"\nfolders = [\"default\"]\nwritable = true\nsnapshot_limit = 20\n",
    );
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "16M"]);
    let names = ["s1", "s2", "s3", "s4", "s5", "s6", "s7"];
    for (i, n) in names.iter().enumerate() {
        qemu_io(&img, "qcow2", &[&format!("write -P {} {}M 1M", i + 1, i)]);
        home.ok(&["snapshot", "create", "vd/d", "--name", n, "-q"]);
    }
    // Monday 2026-11-23 00:00 UTC, then days and hours after it.
    let monday = 1_795_392_000u64;
    let at = |day: u64, hour: u64| monday + day * 86400 + hour * 3600;
    set_dates(
        &img,
        &[
            ("s1", at(1, 8)),
            ("s2", at(1, 20)),
            ("s3", at(2, 9)),
            ("s4", at(8, 10)),
            ("s5", at(9, 7)),
            ("s6", at(9, 22)),
            ("s7", at(15, 12)),
        ],
    );
    check(&img);
    let policy = [
        "--keep-last",
        "1",
        "--keep-daily",
        "2",
        "--keep-weekly",
        "2",
    ];
    let run = |apply: bool| -> Value {
        let mut a = vec!["prune", "vd/d", "-o", "json"];
        a.extend(policy);
        if apply {
            a.push("--apply");
        }
        json(&home.ok(&a))
    };
    let with_action = |doc: &Value, action: &str| -> Vec<String> {
        doc["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["action"] == action)
            .map(|s| {
                s["name"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("vds/d@")
                    .to_owned()
            })
            .collect()
    };
    let dry = run(false);
    assert_eq!(dry["dry_run"], true);
    // keep-last takes s7; daily the newest of days 9 and 8 (s6, s4); weekly the newest
    // of the week not yet covered (s3).
    assert_eq!(with_action(&dry, "remove"), ["s1", "s2", "s5"]);
    assert_eq!(with_action(&dry, "keep"), ["s3", "s4", "s6", "s7"]);
    // The dry run deleted nothing.
    assert_eq!(qemu_listed(&img), names);

    let applied = run(true);
    assert_eq!(
        with_action(&applied, "removed"),
        with_action(&dry, "remove")
    );
    assert_eq!(qemu_listed(&img), with_action(&dry, "keep"));
    check(&img);
    // Applied again, there is nothing left to remove.
    assert!(with_action(&run(true), "removed").is_empty());

    // Without a policy it refuses; the pool's own policy serves when configured.
    let err = home.fails(&["prune"]);
    assert!(err.contains("no retention policy"), "{err}");
    home.write_config(
        "[pools.default]\nplugin = \"qcow2\"\nfolders = [\"default\"]\nwritable = true\nsnapshot_limit = 20\nretention = { keep_last = 2 }\n",
    );
    let doc = json(&home.ok(&["prune", "-o", "json", "--apply"]));
    assert_eq!(with_action(&doc, "removed"), ["s3", "s4"]);
    assert_eq!(qemu_listed(&img), ["s6", "s7"]);
    check(&img);
}

/// Two snapshots within the same second are two snapshots, each of the data it was
/// taken over; a name is one snapshot per disk, and the same name on another disk is
/// that disk's own.
#[test]
fn names_are_unique_per_disk_and_defaults_never_collide() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    let other = home.pool().join("e.qcow2");
    for i in [&img, &other] {
        tool("qemu-img", &["create", "-q", "-f", "qcow2", p(i), "16M"]);
    }
    home.write_config(
        "[pools.default]\nplugin = \"qcow2\"\nfolders = [\"default\"]\nwritable = true\nsnapshot_limit = 10\n",
    );
    // Back to back, with default names: distinct, each holding its own data.
    let mut taken = Vec::new();
    for pattern in ["0x41", "0x42", "0x43"] {
        qemu_io(&img, "qcow2", &[&format!("write -P {pattern} 0 1M")]);
        let raw = home.out(&format!("at-{pattern}.raw"));
        active_raw(&img, &raw);
        let made = json(&home.ok(&["snapshot", "create", "vd/d", "-o", "json"]));
        taken.push((made["snapshot"].as_str().unwrap().to_owned(), raw));
    }
    let names: Vec<&str> = taken.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(qemu_listed(&img), names, "three distinct snapshots");
    for (name, raw) in &taken {
        let got = home.out(&format!("{name}.export.raw"));
        home.ok(&["download", &format!("vds/d@{name}"), "-o", p(&got), "-q"]);
        tool("cmp", &[p(raw), p(&got)]);
    }
    let listed = snapshots(&home);
    assert_eq!(listed.len(), 3, "{listed:?}");

    // --name twice: the second is refused, and nothing is made.
    home.ok(&["snapshot", "create", "vd/d", "--name", "nightly", "-q"]);
    qemu_io(&img, "qcow2", &["write -P 0x55 0 1M"]);
    let err = home.fails(&["snapshot", "create", "vd/d", "--name", "nightly"]);
    assert!(err.contains("exists already"), "{err}");
    assert_eq!(
        qemu_listed(&img).iter().filter(|n| *n == "nightly").count(),
        1
    );
    let nightly = home.out("nightly.raw");
    home.ok(&["download", "vds/d@nightly", "-o", p(&nightly), "-q"]);
    tool("cmp", &[p(&taken[2].1), p(&nightly)]);

    // The same name on another disk is that disk's own snapshot.
    qemu_io(&other, "qcow2", &["write -P 0x66 0 1M"]);
    let e_raw = home.out("e.raw");
    active_raw(&other, &e_raw);
    home.ok(&["snapshot", "create", "vd/e", "--name", "nightly", "-q"]);
    let got = home.out("e-nightly.raw");
    home.ok(&["download", "vds/e@nightly", "-o", p(&got), "-q"]);
    tool("cmp", &[p(&e_raw), p(&got)]);
    check(&img);
    check(&other);
}

/// Listing one disk's snapshots leaves the records of every other disk as they were.
#[test]
fn listing_one_disk_keeps_the_records_of_the_others() {
    let home = Home::new();
    for d in ["d", "e"] {
        let img = home.pool().join(format!("{d}.qcow2"));
        tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "4M"]);
    }
    home.ok(&["snapshot", "create", "vd/e", "--name", "e1", "-q"]);
    home.ok(&[
        "snapshot",
        "create",
        "vd/e",
        "--name",
        "e2",
        "--comment",
        "keep me",
        "-q",
    ]);
    home.ok(&["snapshot", "create", "vd/d", "--name", "d1", "-q"]);
    for _ in 0..2 {
        home.ok(&["get", "vds", "d"]);
    }
    let e2 = json(&home.ok(&["describe", "vds/e@e2", "-o", "json"]));
    assert_eq!(e2["comment"], "keep me");
    assert_eq!(e2["parent"], "vds/e@e1");
    // The backend's ID is shown with the name.
    let id = e2["id"].as_str().unwrap();
    let qemu = tool(
        "qemu-img",
        &["snapshot", "-l", p(&home.pool().join("e.qcow2"))],
    );
    assert!(
        qemu.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some(id) && w.next() == Some("e2")
        }),
        "ID {id} of e2 is not what qemu-img lists:\n{qemu}"
    );
}

/// Records written by snapport before snapshots were kept by ID are read, and keep
/// their comments and parents.
#[test]
fn records_of_the_earlier_format_are_read() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "4M"]);
    tool("qemu-img", &["snapshot", "-c", "a", p(&img)]);
    tool("qemu-img", &["snapshot", "-c", "b", p(&img)]);
    let state = home.path().join("state/default");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("snapshots.json"),
        r#"{"snapshots": {"d@a": {"phase": "Ready", "consistent": true, "comment": "first"},
            "d@b": {"phase": "Ready", "consistent": false, "parent": "a", "comment": "second"}},
            "heads": {"d": "b"}}"#,
    )
    .unwrap();
    let b = json(&home.ok(&["describe", "vds/d@b", "-o", "json"]));
    assert_eq!(b["comment"], "second");
    assert_eq!(b["parent"], "vds/d@a");
    let a = json(&home.ok(&["describe", "vds/d@a", "-o", "json"]));
    assert_eq!(a["consistent"], true);
    // Deleting a re-parents b, as before.
    home.ok(&["delete", "vds/d@a", "-q"]);
    let b = json(&home.ok(&["describe", "vds/d@b", "-o", "json"]));
    assert_eq!(b["parent"], Value::Null);
    assert_eq!(qemu_listed(&img), ["b"]);
}

/// A snapshot a killed process was taking (its record InProgress, its process gone)
/// is cleaned up by `snapshot gc`, and by the next snapshot of the disk.
#[test]
fn what_a_dead_process_left_is_cleaned_up() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "4M"]);
    let dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let state = home.path().join("state/default");
    std::fs::create_dir_all(&state).unwrap();
    // The backend made `half` (named and dated as asked); the process died before
    // recording the answer. An operator's own `half`, dated otherwise, is not it.
    let leave = |home: &Home| {
        tool("qemu-img", &["snapshot", "-c", "half", p(&img)]);
        let listed = snapshots(home);
        let date = listed
            .iter()
            .find(|s| s["snapshot"] == "half")
            .and_then(|s| s["created_unix_ms"].as_u64())
            .unwrap();
        let record = format!(
            r#"{{"disk": "d", "name": "half", "phase": "InProgress", "consistent": false,
                "asked": true, "created_unix_ms": {date},
                "owner": {{"pid": {pid}, "start": 1}}}}"#
        );
        std::fs::write(
            state.join("snapshots.json"),
            format!(r#"{{"disk_snapshots": [{record}], "heads": {{}}}}"#),
        )
        .unwrap();
    };
    leave(&home);
    // Until cleaned up, both show: the attempt, and the snapshot nobody recorded.
    let listed = snapshots(&home);
    assert!(
        listed
            .iter()
            .any(|s| s["phase"] == "InProgress" && s["id"].is_null()),
        "{listed:?}"
    );
    let out = home.ok(&["snapshot", "gc"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("vds/d@half"), "{said}");
    assert!(qemu_listed(&img).is_empty());
    assert!(snapshots(&home).is_empty());

    // And the next snapshot create does the same on its own.
    leave(&home);
    home.ok(&["snapshot", "create", "vd/d", "--name", "next", "-q"]);
    assert_eq!(qemu_listed(&img), ["next"]);

    // A record that names only a name: an operator's snapshot of that name, made at
    // another time, is left alone; only the record goes.
    tool("qemu-img", &["snapshot", "-c", "half", p(&img)]);
    let record = format!(
        r#"{{"disk": "d", "name": "half", "phase": "InProgress", "consistent": false,
            "asked": true, "created_unix_ms": 1, "owner": {{"pid": {pid}, "start": 1}}}}"#
    );
    let mut records: Value =
        serde_json::from_slice(&std::fs::read(state.join("snapshots.json")).unwrap()).unwrap();
    records["disk_snapshots"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::from_str(&record).unwrap());
    std::fs::write(state.join("snapshots.json"), records.to_string()).unwrap();
    home.ok(&["snapshot", "gc"]);
    assert_eq!(qemu_listed(&img), ["next", "half"]);
    check(&img);
}

/// `tree -o json`: the snapshots `get vds -o json` lists, each under its parent, with the
/// disk's present (`head`) under the one it came from.
#[test]
fn tree_json_is_the_listing_as_a_tree() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "16M"]);
    home.ok(&["snapshot", "create", "vd/d", "--name", "s1", "-q"]);
    qemu_io(&img, "qcow2", &["write -P 0x11 0 1M"]);
    home.ok(&["snapshot", "create", "vd/d", "--name", "s2", "-q"]);
    // Made by QEMU: no parent snapport knows of, a root.
    tool("qemu-img", &["snapshot", "-c", "q3", p(&img)]);

    let tree = json(&home.ok(&["tree", "vd/d", "-o", "json"]));
    assert_eq!(tree["disk"], "vd/d");
    assert_eq!(tree["pool"], "default");
    assert_eq!(tree["head"], "s2");
    let roots = tree["roots"].as_array().unwrap();
    let names: Vec<&str> = roots.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["vds/d@s1", "vds/d@q3"]);
    let children = roots[0]["children"].as_array().unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(children[0]["name"], "vds/d@s2");
    assert_eq!(children[0]["children"], serde_json::json!([]));
    assert_eq!(roots[1]["children"], serde_json::json!([]));

    // Every node, without its children, is the snapshot as `get vds -o json` shows it.
    fn flatten(nodes: &[Value], out: &mut Vec<Value>) {
        for n in nodes {
            let mut doc = n.clone();
            let children = doc.as_object_mut().unwrap().remove("children").unwrap();
            out.push(doc);
            flatten(children.as_array().unwrap(), out);
        }
    }
    let mut nodes = Vec::new();
    flatten(roots, &mut nodes);
    let mut listed = snapshots(&home);
    let key = |v: &Value| v["name"].as_str().unwrap().to_string();
    nodes.sort_by_key(key);
    listed.sort_by_key(key);
    assert_eq!(nodes, listed);

    // The same document under the other spellings of the flag.
    for flag in [&["--output-format", "json"][..], &["--json"][..]] {
        let again = json(&home.ok(&[&["tree", "vd/d"][..], flag].concat()));
        assert_eq!(again, tree);
    }
    // -q prints nothing.
    assert!(home.ok(&["tree", "vd/d", "-q"]).stdout.is_empty());
}
