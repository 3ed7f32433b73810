//! Snapshots written by `snapport_qcow2::snapshot`, judged by QEMU: `qemu-img check`
//! verifies every refcount and COPIED flag, `qemu-img snapshot -l` lists the table, and
//! guest writes through `qemu-io` after a snapshot must leave the snapshot's data alone
//! (which they only do when the flags say "copy first").

use snapport_qcow2::format::{self, Medium};
use snapport_qcow2::snapshot::{self, MediumMut};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

struct Disk(File);

impl Medium for Disk {
    fn size(&self) -> u64 {
        self.0.metadata().unwrap().len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> format::Result<()> {
        self.0
            .read_exact_at(buf, offset)
            .map_err(|e| format::Error::Io(e.to_string()))
    }
}

impl MediumMut for Disk {
    fn write_all_at(&self, offset: u64, bytes: &[u8]) -> format::Result<()> {
        self.0
            .write_all_at(bytes, offset)
            .map_err(|e| format::Error::Io(e.to_string()))
    }
}

fn open(path: &Path) -> Disk {
    Disk(File::options().read(true).write(true).open(path).unwrap())
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img check` must find no error and no leak (exit 0).
fn check(img: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", img.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.code() == Some(0),
        "qemu-img check {}: {}{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(img.to_str().unwrap());
    run("qemu-io", &args);
}

/// The active state, or a snapshot's, as a raw file.
fn export(img: &Path, snapshot: Option<&str>, to: &Path) {
    let _ = std::fs::remove_file(to);
    let mut args = vec!["convert".to_string()];
    if let Some(s) = snapshot {
        args.extend(["-l".into(), format!("snapshot.name={s}")]);
    }
    args.extend([
        "-O".into(),
        "raw".into(),
        img.to_str().unwrap().into(),
        to.to_str().unwrap().into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("qemu-img", &args);
}

fn same(a: &Path, b: &Path) {
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

fn listed(img: &Path) -> Vec<String> {
    run("qemu-img", &["snapshot", "-l", img.to_str().unwrap()])
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

fn lifecycle(options: &str) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.qcow2");
    let p = |n: &str| dir.path().join(n);
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            options,
            img.to_str().unwrap(),
            "64M",
        ],
    );
    qemu_io(
        &img,
        &[
            "write -P 0x11 0 4M",
            "write -P 0x22 20M 1M",
            "write -z 30M 1M",
            "write -c -P 0x33 40M 128k",
            "write -c -P 0x34 41M 128k",
        ],
    );
    export(&img, None, &p("s1.want"));
    let s1 = snapshot::create(&open(&img), "s1", (1_700_000_000, 5)).unwrap();
    assert_eq!(s1.id, "1");
    check(&img);
    assert_eq!(listed(&img), ["s1"]);

    // Guest writes over the snapshot's clusters must copy them, not change them.
    qemu_io(
        &img,
        &[
            "write -P 0x55 1M 2M",
            "write -P 0x66 40M 128k",
            "write -P 0x77 50M 1M",
        ],
    );
    check(&img);
    export(&img, Some("s1"), &p("s1.got"));
    same(&p("s1.want"), &p("s1.got"));

    // A snapshot QEMU made sits beside ours; ours gets the next id.
    run("qemu-img", &["snapshot", "-c", "q2", img.to_str().unwrap()]);
    export(&img, None, &p("q2.want"));
    let s3 = snapshot::create(&open(&img), "s3", (1_700_000_100, 0)).unwrap();
    assert_eq!(s3.id, "3");
    assert!(snapshot::create(&open(&img), "s3", (0, 0)).is_err());
    assert!(snapshot::create(&open(&img), "q2", (0, 0)).is_err());
    qemu_io(&img, &["write -P 0x88 0 8M"]);
    export(&img, None, &p("active.want"));
    check(&img);

    snapshot::delete(&open(&img), "s1").unwrap();
    check(&img);
    assert_eq!(listed(&img), ["q2", "s3"]);
    export(&img, Some("q2"), &p("q2.got"));
    same(&p("q2.want"), &p("q2.got"));
    export(&img, Some("s3"), &p("s3.got"));
    same(&p("q2.want"), &p("s3.got"));
    export(&img, None, &p("active.got"));
    same(&p("active.want"), &p("active.got"));

    // Revert: the active state becomes the snapshot's; the snapshot stays.
    snapshot::revert(&open(&img), "s3").unwrap();
    check(&img);
    export(&img, None, &p("reverted"));
    same(&p("q2.want"), &p("reverted"));
    qemu_io(&img, &["write -P 0x99 2M 1M"]);
    check(&img);
    export(&img, Some("s3"), &p("s3.again"));
    same(&p("q2.want"), &p("s3.again"));

    // Deleting everything leaves no leak: check counts every cluster.
    snapshot::delete(&open(&img), "q2").unwrap();
    snapshot::delete(&open(&img), "3").unwrap();
    check(&img);
    assert!(listed(&img).is_empty());
    assert!(snapshot::delete(&open(&img), "s3").is_err());
    // QEMU still snapshots the image after us.
    run(
        "qemu-img",
        &["snapshot", "-c", "after", img.to_str().unwrap()],
    );
    check(&img);
}

#[test]
fn lifecycle_with_16_bit_refcounts() {
    lifecycle("refcount_bits=16");
}

#[test]
fn lifecycle_with_1_bit_refcounts_and_small_clusters() {
    // One-bit counts cannot hold two references: creating the first snapshot is refused
    // before anything is written.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "refcount_bits=1,cluster_size=4096",
            img.to_str().unwrap(),
            "8M",
        ],
    );
    qemu_io(&img, &["write -P 0x11 0 1M"]);
    let before = std::fs::read(&img).unwrap();
    let err = snapshot::create(&open(&img), "s1", (0, 0)).unwrap_err();
    assert!(format!("{err:?}").contains("1-bit refcount"), "{err:?}");
    assert!(
        before == std::fs::read(&img).unwrap(),
        "a refused snapshot changed the image"
    );
    check(&img);
}

#[test]
fn lifecycle_with_64_bit_refcounts_and_4k_clusters() {
    lifecycle("refcount_bits=64,cluster_size=4096");
}

#[test]
fn lifecycle_with_4_bit_refcounts_and_extended_l2() {
    lifecycle("refcount_bits=4,extended_l2=on,cluster_size=128k");
}

#[test]
fn lifecycle_with_many_refcount_blocks() {
    // 512-byte clusters: a refcount block covers 256 clusters, so the new tables land
    // where no block counts yet and blocks are created.
    lifecycle("cluster_size=512");
}

#[test]
fn dirty_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "8M"],
    );
    // Set the dirty bit (incompatible feature bit 0, header byte 79).
    let f = open(&img);
    f.write_all_at(79, &[1]).unwrap();
    let err = snapshot::create(&f, "s1", (0, 0)).unwrap_err();
    assert!(format!("{err:?}").contains("dirty"), "{err:?}");
}
