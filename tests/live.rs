//! Disks a running QEMU holds, judged against QEMU itself: `qemu-storage-daemon` holds a
//! qcow2 disk (its locks, a QMP monitor, an NBD export a writer writes through), and
//! snapport snapshots, exports, deletes and refuses to restore it while it runs.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE: &str = "disk0";
const MIB: usize = 1 << 20;

/// A `qemu-storage-daemon` holding a qcow2 file; killed when dropped.
struct Daemon {
    child: Child,
    qmp: PathBuf,
    nbd: PathBuf,
}

impl Daemon {
    fn start(img: &Path, dir: &Path) -> Option<Daemon> {
        let qmp = dir.join("qmp.sock");
        let nbd = dir.join("nbd.sock");
        let child = Command::new("qemu-storage-daemon")
            .args([
                "--chardev",
                &format!("socket,id=m,path={},server=on,wait=off", qmp.display()),
                "--monitor",
                "chardev=m",
                "--blockdev",
                &format!("driver=file,node-name=file0,filename={}", img.display()),
                "--blockdev",
                &format!("driver=qcow2,node-name={NODE},file=file0"),
                "--nbd-server",
                &format!("addr.type=unix,addr.path={}", nbd.display()),
                "--export",
                &format!("type=nbd,id=e,node-name={NODE},name={NODE},writable=on"),
            ])
            .stdout(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("qemu-storage-daemon: {e}"),
        };
        let d = Daemon { child, qmp, nbd };
        let start = Instant::now();
        while !(d.qmp.exists() && d.nbd.exists()) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(d)
    }

    fn url(&self) -> String {
        format!("nbd+unix:///{NODE}?socket={}", self.nbd.display())
    }

    /// qemu-io commands through the NBD export, each done before the next starts.
    fn io(&self, cmds: &[String]) -> Command {
        let mut c = Command::new("qemu-io");
        c.args(["-f", "raw"]);
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        c.arg(self.url()).stdout(Stdio::null());
        c
    }

    fn write(&self, cmds: &[String]) {
        assert!(self.io(cmds).status().unwrap().success());
    }

    /// The disk's current content, read through QEMU.
    fn content(&self, to: &Path) {
        let _ = std::fs::remove_file(to);
        tool(
            "qemu-img",
            &["convert", "-f", "raw", "-O", "raw", &self.url(), p(to)],
        );
    }

    fn stop(mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn qemu_listed(img: &Path) -> Vec<String> {
    tool("qemu-img", &["snapshot", "-l", p(img)])
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

fn records(home: &Home) -> Vec<Value> {
    let out = home.ok(&["get", "vds", "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn vm_config(home: &Home, qmp: Option<&Path>) {
    let mut cfg = serde_json::json!({ "name": "v", "disks": [{ "name": "d" }] });
    if let Some(q) = qmp {
        cfg["qmp"] = q.display().to_string().into();
    }
    std::fs::create_dir_all(home.path().join("vms")).unwrap();
    std::fs::write(home.path().join("vms/v.json"), cfg.to_string()).unwrap();
}

fn pattern(block: usize) -> u8 {
    (block % 250 + 1) as u8
}

#[test]
fn a_disk_held_by_qemu() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "64M"]);
    let Some(daemon) = Daemon::start(&img, home.path()) else {
        eprintln!("skipped: qemu-storage-daemon is not installed");
        return;
    };

    // Pattern X, written and done.
    daemon.write(&["write -P 0x11 0 4M".into()]);

    // No monitor configured: refused, naming the holder and the setting; nothing left.
    vm_config(&home, None);
    let err = home.fails(&["snapshot", "create", "vd/d", "--name", "s0"]);
    let pid = format!("pid {}", daemon.child.id());
    assert!(err.contains(&pid), "{err}");
    assert!(err.contains("qemu-storage-daemon"), "{err}");
    assert!(
        err.contains("\"qmp\"") && err.contains("vms/v.json"),
        "{err}"
    );
    assert!(records(&home).is_empty(), "{:?}", records(&home));

    // With the monitor: QEMU takes it.
    vm_config(&home, Some(&daemon.qmp));
    home.ok(&["snapshot", "create", "vd/d", "--name", "s1", "-q"]);
    daemon.write(&["write -P 0x22 0 4M".into()]);
    let s1 = home.out("s1.raw");
    home.ok(&["download", "vds/d@s1", "-o", p(&s1), "-q"]);
    let mut want = vec![0u8; 64 * MIB];
    want[..4 * MIB].fill(0x11);
    assert!(
        std::fs::read(&s1).unwrap() == want,
        "vds/d@s1 is not pattern X"
    );

    // A writer writing blocks in order while a snapshot is taken: the snapshot holds a
    // prefix of the writes.
    let (first, blocks, size) = (8 * MIB, 800, 64 * 1024);
    let cmds: Vec<String> = (0..blocks)
        .map(|i| format!("write -P {} {} {size}", pattern(i), first + i * size))
        .collect();
    let mut writer = daemon.io(&cmds).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    home.ok(&["snapshot", "create", "vm/v", "--name", "s2", "-q"]);
    assert!(writer.wait().unwrap().success());
    let s2 = home.out("s2.raw");
    home.ok(&["download", "vds/d@s2", "-o", p(&s2), "-q"]);
    let got = std::fs::read(&s2).unwrap();
    assert!(got[..4 * MIB].iter().all(|&b| b == 0x22));
    let written = (0..blocks)
        .take_while(|&i| {
            let b = &got[first + i * size..first + (i + 1) * size];
            b.iter().all(|&x| x == pattern(i))
        })
        .count();
    assert!(
        got[first + written * size..].iter().all(|&b| b == 0),
        "vds/d@s2 holds block {written} partly, or a later block without an earlier one"
    );
    // Taken while the writer wrote (the writer needs seconds, the snapshot much less).
    assert!(
        written < blocks,
        "the writer finished before vm/v@s2 was taken"
    );

    // An export of the running disk: with a quiet writer, exactly the current content.
    let now = home.out("now.raw");
    home.ok(&["download", "vd/d", "-o", p(&now), "-q"]);
    let current = home.out("current.raw");
    daemon.content(&current);
    tool("cmp", &[p(&now), p(&current)]);

    // Restore is refused while QEMU runs, and nothing changes.
    let err = home.fails(&[
        "restore",
        "vd/d",
        "--from",
        "vds/d@s1",
        "--mode",
        "best-effort",
    ]);
    assert!(err.contains("stop the VM"), "{err}");
    let after = home.out("after.raw");
    daemon.content(&after);
    tool("cmp", &[p(&after), p(&current)]);

    // Delete through QEMU.
    home.ok(&["delete", "vds/d@s2", "-q"]);
    let names: Vec<_> = records(&home)
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["vds/d@s1"]);

    // Deleting the disk is refused while QEMU holds it.
    let err = home.fails(&["delete", "vd/d"]);
    assert!(err.contains("stop the VM") && err.contains(&pid), "{err}");
    assert!(img.exists());

    // Without the monitor, deleting a snapshot is refused and names the holder.
    vm_config(&home, None);
    let err = home.fails(&["delete", "vds/d@s1"]);
    assert!(err.contains(&pid) && err.contains("\"qmp\""), "{err}");
    vm_config(&home, Some(&daemon.qmp));

    // An interrupted export of the running disk deletes its temporary snapshot.
    let export = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["download", "vd/d", "-o", "-", "-q"])
        .env("SNAPPORT_HOME", home.path())
        .env_remove("SNAPPORT_PLUGIN_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let temporary = |home: &Home| {
        records(home)
            .iter()
            .any(|r| r["name"].as_str().unwrap().contains("@snapport-export-"))
    };
    let start = Instant::now();
    while !temporary(&home) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no temporary snapshot seen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: a signal to our own child (blocked writing to a pipe nobody reads).
    unsafe { libc::kill(export.id() as i32, libc::SIGINT) };
    let out = export.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!temporary(&home), "the temporary snapshot was left");

    daemon.stop();
    assert_eq!(
        qemu_listed(&img),
        ["s1"],
        "a snapshot other than s1 was left"
    );
    tool("qemu-img", &["check", p(&img)]);
}
