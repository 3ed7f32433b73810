//! Incremental exports between qcow2 snapshots: the delta holds what changed (sized
//! against the change), base + delta compares identical to the new snapshot under
//! `qemu-img compare`, deltas chain, and a wrong base or a damaged delta is refused with
//! nothing created.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

const GIB: u64 = 1 << 30;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `qemu-img compare` of a pool disk against snapshot `snap` of `img`.
fn same_as_snapshot(home: &Home, disk: &Path, img: &Path, snap: &str) {
    let want = home.out(&format!("{snap}.raw"));
    if !want.exists() {
        tool(
            "qemu-img",
            &[
                "convert",
                "-l",
                &format!("snapshot.name={snap}"),
                "-O",
                "raw",
                p(img),
                p(&want),
            ],
        );
    }
    tool("qemu-img", &["compare", "-F", "raw", p(disk), p(&want)]);
}

/// Writes `count` 1 MiB patterns spread over a 4 GiB disk, starting at `seed` MiB.
fn scatter(img: &Path, count: u64, seed: u64, pattern: u8) {
    let cmds: Vec<String> = (0..count)
        .map(|i| {
            let mib = (seed + i * 97) % (4 * 1024 - 1);
            format!("write -P {pattern} {mib}M 1M")
        })
        .collect();
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(img, "qcow2", &cmds);
}

#[test]
fn deltas_hold_what_changed_apply_in_order_and_refuse_the_wrong_base() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "4G"]);
    scatter(&img, 200, 3, 0x11);
    home.ok(&["snapshot", "create", "vd/d", "--name", "s1", "-q"]);

    // Change 1 % of the disk: 41 MiB of new data (some over old data, some fresh) and
    // 1 MiB of old data zeroed.
    scatter(&img, 41, 5, 0x22);
    qemu_io(&img, "qcow2", &["write -z 3M 1M"]);
    home.ok(&["snapshot", "create", "vd/d", "--name", "s2", "-q"]);

    let d1 = home.out("s2.delta");
    let doc = json(&home.ok(&[
        "download",
        "vds/d@s2",
        "--since",
        "vds/d@s1",
        "-o",
        p(&d1),
        "-q",
        "--json",
    ]));
    let size = std::fs::metadata(&d1).unwrap().len();
    assert_eq!(doc["output_size"], size);
    assert_eq!(doc["data_bytes"], 41 << 20, "{doc}");
    assert_eq!(doc["zero_bytes"], 1 << 20, "{doc}");
    // About 1 % of the disk, and not much more: the data plus a little framing.
    let share = size as f64 / (4 * GIB) as f64;
    assert!(
        (0.0099..0.0102).contains(&share),
        "delta is {share:.4} of the disk"
    );

    // Base + delta is the new snapshot.
    let r1 = home.pool().join("r1.qcow2");
    let applied = json(&home.ok(&[
        "upload",
        p(&d1),
        "vd/r1",
        "--onto",
        "vds/d@s1",
        "-q",
        "-o",
        "json",
    ]));
    assert_eq!(applied["content_digest"], doc["target_digest"]);
    same_as_snapshot(&home, &r1, &img, "s2");
    tool("qemu-img", &["check", p(&r1)]);

    // A second delta applies on top of the first one's result: chains go in order.
    scatter(&img, 20, 11, 0x33);
    home.ok(&["snapshot", "create", "vd/d", "--name", "s3", "-q"]);
    let d2 = home.out("s3.delta");
    home.ok(&[
        "download",
        "vds/d@s3",
        "--since",
        "vds/d@s2",
        "-o",
        p(&d2),
        "-q",
    ]);
    let r2 = home.pool().join("r2.qcow2");
    home.ok(&["upload", p(&d2), "vd/r2", "--onto", "vd/r1", "-q"]);
    same_as_snapshot(&home, &r2, &img, "s3");

    // The wrong base: refused before anything is written, no disk appears.
    let before = files_in(&home.pool());
    let err = home.fails(&["upload", p(&d2), "vd/r3", "--onto", "vds/d@s1"]);
    assert!(err.contains("is not the base of this delta"), "{err}");
    let err = home.fails(&["upload", p(&d1), "vd/r3", "--onto", "vd/r2", "-q"]);
    assert!(err.contains("is not the base of this delta"), "{err}");
    assert_eq!(files_in(&home.pool()), before);

    // A flipped byte anywhere (here in the data) is refused, nothing created.
    let mut bytes = std::fs::read(&d2).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let bad = home.out("bad.delta");
    std::fs::write(&bad, &bytes).unwrap();
    let err = home.fails(&["upload", p(&bad), "vd/r3", "--onto", "vd/r1", "-q"]);
    assert!(err.contains("closing SHA-256"), "{err}");
    // Truncated, too.
    std::fs::write(&bad, &bytes[..at]).unwrap();
    let err = home.fails(&["upload", p(&bad), "vd/r3", "--onto", "vd/r1", "-q"]);
    assert!(err.contains("not a valid snapport delta"), "{err}");
    assert_eq!(files_in(&home.pool()), before);

    // A delta between two disks' snapshots makes no sense.
    let err = home.fails(&[
        "download",
        "vds/d@s3",
        "--since",
        "vds/r1@s1",
        "-o",
        p(&bad),
    ]);
    assert!(err.contains("not of vd/d"), "{err}");
}

/// Rewrites delta `from` into `to` with the target's size and content digest replaced,
/// its closing SHA-256 recomputed: a well-formed delta to a target of any size.
fn retarget(from: &Path, to: &Path, size: u64, digest: &str) {
    let script = r#"
import hashlib, json, struct, sys
b = open(sys.argv[1], 'rb').read()
assert b[:8] == b'SNAPDLT1'
n = struct.unpack('>I', b[8:12])[0]
manifest = json.loads(b[12:12 + n])
manifest['target']['size'] = int(sys.argv[3])
pos = start = 12 + n
while b[pos] != 0:
    kind, off, length = struct.unpack('>BQQ', b[pos:pos + 17])
    pos += 17 + (length if kind == 1 else 0)
records = b[start:pos + 1]
pos += 1
n = struct.unpack('>I', b[pos:pos + 4])[0]
footer = json.loads(b[pos + 4:pos + 4 + n])
footer['target_digest'] = sys.argv[4]
m, f = json.dumps(manifest).encode(), json.dumps(footer).encode()
body = b'SNAPDLT1' + struct.pack('>I', len(m)) + m + records + struct.pack('>I', len(f)) + f
open(sys.argv[2], 'wb').write(body + hashlib.sha256(body).digest())
"#;
    tool(
        "python3",
        &["-c", script, p(from), p(to), &size.to_string(), digest],
    );
}

#[test]
fn a_delta_to_a_size_the_pool_cannot_store_is_refused_or_applied_exactly() {
    let home = Home::new();
    let img = home.pool().join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "1M"]);
    qemu_io(&img, "qcow2", &["write -P 0x11 0 256k"]);
    home.ok(&["snapshot", "create", "vd/d", "--name", "s1", "-q"]);
    qemu_io(&img, "qcow2", &["write -P 0x22 512k 128k"]);
    home.ok(&["snapshot", "create", "vd/d", "--name", "s2", "-q"]);
    let delta = home.out("d.delta");
    home.ok(&[
        "download",
        "vds/d@s2",
        "--since",
        "vds/d@s1",
        "-o",
        p(&delta),
        "-q",
    ]);
    let (s1, s2) = (home.out("s1.raw"), home.out("s2.raw"));
    home.ok(&["download", "vds/d@s1", "-o", p(&s1), "-q"]);
    home.ok(&["download", "vds/d@s2", "-o", p(&s2), "-q"]);
    // The same change to a target of 1 MiB + 7 bytes: s2 with 7 zero bytes after it.
    let want = home.out("want.raw");
    let mut bytes = std::fs::read(&s2).unwrap();
    bytes.extend_from_slice(&[0; 7]);
    std::fs::write(&want, &bytes).unwrap();
    let odd = home.out("odd.delta");
    retarget(&delta, &odd, (1 << 20) + 7, &python_content_digest(&want));

    // The qcow2 pool stores whole sectors: refused before anything is written.
    let before = files_in(&home.pool());
    let line = home.fails(&["upload", p(&odd), "vd/o", "--onto", "vds/d@s1"]);
    assert!(
        line.contains(
            "the source is 1048583 bytes; pool default stores volumes in multiples of 512 bytes"
        ),
        "{line}"
    );
    assert_eq!(files_in(&home.pool()), before);
    let listed = String::from_utf8(home.ok(&["get", "vd", "-o", "json"]).stdout).unwrap();
    assert!(!listed.contains("vd/o\""), "{listed}");

    // A raw pool holds it: applied onto a disk holding s1, exactly the target's bytes.
    let dir = home.path().join("rawpool");
    std::fs::create_dir_all(&dir).unwrap();
    home.write_config(&format!(
        "[pools.r]\nplugin = \"raw\"\nfolders = [\"{}\"]\nwritable = true\n",
        dir.display()
    ));
    home.ok(&["upload", p(&s1), "vd/base", "-n", "r", "-q"]);
    home.ok(&[
        "upload",
        p(&odd),
        "vd/o",
        "-n",
        "r",
        "--onto",
        "vd/base",
        "-q",
    ]);
    let made = dir.join("o.raw");
    assert_eq!(std::fs::metadata(&made).unwrap().len(), (1 << 20) + 7);
    tool("cmp", &[p(&want), p(&made)]);
}
