//! Hostile and broken images: each export fails with one clear line, exit code 1, no
//! panic, and nothing left in the output folder (no file under the final name, no
//! temporary file).

mod common;
use common::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A valid qcow2 (64 KiB clusters, 4 MiB, some data) in a fresh pool.
fn good_image() -> (Home, PathBuf) {
    let home = Home::new();
    let img = home.pool().join("disk.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "4M"]);
    qemu_io(
        &img,
        "qcow2",
        &["write -P 0x5a 0 256k", "write -P 0xa5 2m 64k"],
    );
    (home, img)
}

fn be64_at(img: &Path, at: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(img)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    u64::from_be_bytes(b)
}

fn put(img: &Path, at: u64, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .unwrap()
        .write_all_at(bytes, at)
        .unwrap();
}

fn l1_offset(img: &Path) -> u64 {
    be64_at(img, 40)
}

/// Offset of the L2 table the first L1 entry points to.
fn first_l2(img: &Path) -> u64 {
    be64_at(img, l1_offset(img)) & 0x00ff_ffff_ffff_fe00
}

/// Export must fail with a message containing `expect`, leaving no output behind.
fn refused(home: &Home, address: &str, expect: &str) {
    let out = home.out("x.raw");
    let line = home.fails(&["download", address, "-o", p(&out)]);
    assert!(line.contains(expect), "expected {expect:?} in: {line}");
    assert_eq!(
        files_in(out.parent().unwrap()),
        Vec::<String>::new(),
        "output folder not empty after: {line}"
    );
    let q = home.out("x.qcow2");
    let line = home.fails(&["download", address, "-o", p(&q), "--format", "qcow2"]);
    assert!(line.contains(expect), "expected {expect:?} in: {line}");
    assert_eq!(files_in(q.parent().unwrap()), Vec::<String>::new());
}

#[test]
fn truncated_files() {
    let (home, img) = good_image();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(50)
        .unwrap();
    refused(&home, "vd/disk", "too short for a qcow2 header");

    let (home, img) = good_image();
    let l2 = first_l2(&img);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(l2 + 100)
        .unwrap();
    refused(&home, "vd/disk", "runs past the end of the file");

    let (home, img) = good_image();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(65536 + 8)
        .unwrap();
    refused(&home, "vd/disk", "past the end");
}

#[test]
fn header_bit_flips() {
    let cases: &[(u64, &[u8], &str)] = &[
        (0, b"QFJ\xfb", "no qcow2 magic"),
        (4, &[0, 0, 0, 9], "version 9"),
        (20, &[0, 0, 0, 31], "cluster_bits 31"),
        (32, &[0, 0, 0, 1], "encrypted"),
        (36, &[0, 0, 0, 0], "need"),
        (24, &[0x40, 0, 0, 0, 0, 0, 0, 0], "need"),
        (40, &[0, 0, 0, 0, 0, 1, 0, 0x10], "not cluster-aligned"),
        (48, &[0, 0, 0x10, 0, 0, 0, 0, 0], "refcount table"),
        (
            72,
            &[0, 0, 0, 0, 0, 0, 0, 0x80],
            "unknown incompatible features",
        ),
        (72, &[0, 0, 0, 0, 0, 0, 0, 0x02], "marked corrupt"),
        (72, &[0, 0, 0, 0, 0, 0, 0, 0x04], "external data file"),
        (100, &[0, 0, 0, 50], "header_length"),
        (100, &[0, 1, 0, 1], "header_length"),
        (60, &[0, 0x10, 0, 0], "snapshots"),
    ];
    for (at, bytes, expect) in cases {
        let (home, img) = good_image();
        put(&img, *at, bytes);
        refused(&home, "vd/disk", expect);
    }
}

#[test]
fn tables_pointing_past_the_end_or_into_metadata() {
    let copied = 1u64 << 63;
    // L1 entry past the end of the file.
    let (home, img) = good_image();
    let size = std::fs::metadata(&img).unwrap().len();
    put(
        &img,
        l1_offset(&img),
        &(copied | (size + (1 << 20)) & !0xffff).to_be_bytes(),
    );
    refused(&home, "vd/disk", "L2 table");

    // L1 entry pointing at the L1 table itself.
    let (home, img) = good_image();
    let l1 = l1_offset(&img);
    put(&img, l1, &(copied | l1).to_be_bytes());
    refused(&home, "vd/disk", "overlaps metadata");

    // L2 entry past the end of the file.
    let (home, img) = good_image();
    let size = std::fs::metadata(&img).unwrap().len();
    put(
        &img,
        first_l2(&img),
        &(copied | ((size + (4 << 20)) & !0xffff)).to_be_bytes(),
    );
    refused(&home, "vd/disk", "past the end of the file");

    // L2 entry pointing into the refcount table.
    let (home, img) = good_image();
    let reftable = be64_at(&img, 48);
    put(&img, first_l2(&img), &(copied | reftable).to_be_bytes());
    refused(&home, "vd/disk", "overlaps metadata");

    // L2 entry that is not cluster-aligned.
    let (home, img) = good_image();
    let entry = be64_at(&img, first_l2(&img));
    put(&img, first_l2(&img), &(entry + 512).to_be_bytes());
    refused(&home, "vd/disk", "not cluster-aligned");
}

#[test]
fn backing_loops() {
    let home = Home::new();
    let (a, b) = (home.pool().join("a.qcow2"), home.pool().join("b.qcow2"));
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&b), "1M"]);
    qcow2_overlay(&a, "b.qcow2", "qcow2", "1M", None);
    tool(
        "qemu-img",
        &["rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", p(&b)],
    );
    refused(&home, "vd/a", "backing chain loops");

    // A file that is its own backing file.
    let home = Home::new();
    let s = home.pool().join("self.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&s), "1M"]);
    tool(
        "qemu-img",
        &["rebase", "-u", "-b", "self.qcow2", "-F", "qcow2", p(&s)],
    );
    refused(&home, "vd/self", "backing chain loops");
}

#[test]
fn backing_file_outside_the_granted_folder() {
    let home = Home::new();
    let elsewhere = home.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let base = elsewhere.join("base.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&base), "1M"]);
    qemu_io(&base, "qcow2", &["write -P 1 0 64k"]);
    // Relative, absolute, and through a symbolic link inside the pool.
    let rel = home.pool().join("rel.qcow2");
    qcow2_overlay(&rel, "../elsewhere/base.qcow2", "qcow2", "1M", None);
    let abs = home.pool().join("abs.qcow2");
    qcow2_overlay(&abs, p(&base), "qcow2", "1M", None);
    std::os::unix::fs::symlink(&base, home.pool().join("link.img")).unwrap();
    let via_link = home.pool().join("vialink.qcow2");
    qcow2_overlay(&via_link, "link.img", "qcow2", "1M", None);
    for disk in ["vd/rel", "vd/abs", "vd/vialink"] {
        refused(&home, disk, "outside the folders this pool grants");
    }
}

#[test]
fn usage_errors() {
    let (home, _img) = good_image();
    let out = home.out("u.raw");
    let line = home.fails(&["download", "disk", "-o", p(&out)]);
    assert!(line.contains("not vd/NAME"), "{line}");
    let line = home.fails(&["download", "vd/nope", "-o", p(&out)]);
    assert!(line.contains("no volume nope"), "{line}");
    let line = home.fails(&["download", "vds/disk@nosnap", "-o", p(&out)]);
    assert!(line.contains("no snapshot nosnap"), "{line}");
    let line = home.fails(&["download", "vd/disk", "-n", "nopool", "-o", p(&out)]);
    assert!(line.contains("no pool"), "{line}");
    let line = home.fails(&["download", "vd/disk", "-o", p(home.out("").as_path())]);
    assert!(line.contains("folder"), "{line}");
    assert_eq!(
        home.snapport(&["download", "vd/disk", "-o", p(&out), "--format", "vmdk"])
            .status
            .code(),
        Some(2)
    );
    home.write_config("pools = 3");
    let line = home.fails(&["get", "vd"]);
    assert!(
        line.contains("not a valid snapport configuration"),
        "{line}"
    );
}

#[test]
fn listing_survives_a_corrupt_disk() {
    let (home, img) = good_image();
    put(&img, 20, &[0, 0, 0, 31]);
    let out = home.ok(&["get", "vd", "-o", "json"]);
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(docs[0]["format"], "unreadable");
    assert!(docs[0]["labels"]["error"]
        .as_str()
        .unwrap()
        .contains("cluster_bits"));
}

#[test]
fn a_reader_that_stops_reading_ends_the_listing_quietly() {
    let (home, _img) = good_image();
    // `snapport get vd | true`: stdout's reader is gone before anything is printed.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["get", "vd"])
        .env("SNAPPORT_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
