//! Loop devices holding LVM physical volumes, made with LVM's own tools (no
//! device-mapper: `--driverloaded n`), for the tests that read them back. Shared by
//! `crates/lvm/tests` and `tests/lvm.rs` through `#[path]`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Loop devices and a VG that go away with the test, whatever happens.
pub struct Lab {
    _dir: tempfile::TempDir,
    pub loops: Vec<String>,
    pub vg: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lvm(&self.loops, &["vgremove", "-f", &self.vg]);
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

pub fn lvm(devices: &[String], args: &[&str]) -> std::result::Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .arg("--devices")
        .arg(devices.join(","))
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ok(devices: &[String], args: &[&str]) -> String {
    lvm(devices, args).unwrap_or_else(|e| panic!("{e}"))
}

fn capable() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: loop devices need root");
    }
    for tool in ["losetup", "pvcreate"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Some(if tool == "losetup" {
                "losetup is not installed"
            } else {
                "lvm2 is not installed (apt-get install lvm2)"
            });
        }
    }
    None
}

pub fn setup(sizes_mib: &[u64]) -> Option<Lab> {
    if let Some(why) = capable() {
        println!("SKIPPED: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut loops = Vec::new();
    for (i, mib) in sizes_mib.iter().enumerate() {
        let img: PathBuf = dir.path().join(format!("pv{i}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        if !out.status.success() {
            println!(
                "SKIPPED: no loop device: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        loops.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    Some(Lab {
        _dir: dir,
        loops,
        vg: format!("snapporttest{}", std::process::id()),
    })
}
