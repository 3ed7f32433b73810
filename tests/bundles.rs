//! Whole-VM bundles: a VM of three disks exports to one tar that stock `tar -x` and
//! `sha256sum -c SHA256SUMS` verify; importing it as a new VM gives identical disks
//! (`qemu-img compare`) under new names with new MAC addresses; a damaged or truncated
//! bundle, or a name conflict, is refused with no VM and no disk created.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// (name, data offset, size) of each member, read from the tar headers by hand.
fn members(tar: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut long: Option<String> = None;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|&b| b != 0) {
        let h = &tar[at..at + 512];
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let size_field = String::from_utf8_lossy(&h[124..136]);
        let size =
            usize::from_str_radix(size_field.trim_matches(|c| c == '\0' || c == ' '), 8).unwrap();
        let data = at + 512;
        if h[156] == b'L' {
            long = Some(
                String::from_utf8_lossy(&tar[data..data + size])
                    .trim_end_matches('\0')
                    .to_string(),
            );
        } else {
            out.push((long.take().unwrap_or(name), data, size));
        }
        at = data + size.div_ceil(512) * 512;
    }
    out
}

fn vm_names(home: &Home) -> Vec<String> {
    let docs = json(&home.ok(&["get", "vm", "-o", "json"]));
    docs.as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_vm_bundle_round_trips_and_damage_leaves_nothing() {
    let home = Home::new();
    let pool = home.pool();
    let root = pool.join("web-root.qcow2");
    let data = pool.join("web-data.qcow2");
    let logs = pool.join("logs.raw");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&root), "256M"],
    );
    qemu_io(
        &root,
        "qcow2",
        &["write -P 0x11 0 8M", "write -P 0x22 100M 3M"],
    );
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&data), "128M"],
    );
    qemu_io(&data, "qcow2", &["write -P 0x33 64M 1M"]);
    tool("qemu-img", &["create", "-q", "-f", "raw", p(&logs), "64M"]);
    qemu_io(&logs, "raw", &["write -P 0x44 1M 1M"]);
    let cfg = home.out("web.json");
    std::fs::write(
        &cfg,
        r#"{"name":"web","cpu":2,
            "disks":[{"name":"web-root"},{"name":"web-data"},{"name":"logs","bus":"virtio"}],
            "network":[{"mac":"52:54:00:12:34:56","ip":"10.0.0.5"}]}"#,
    )
    .unwrap();
    home.ok(&["create", "vm/web", "--config", p(&cfg), "-q"]);
    assert_eq!(vm_names(&home), ["web"]);
    // A config naming a disk that is not there is refused.
    std::fs::write(&cfg, r#"{"name":"ghost","disks":[{"name":"nope"}]}"#).unwrap();
    let err = home.fails(&["create", "vm/ghost", "--config", p(&cfg)]);
    assert!(err.contains("vd/nope"), "{err}");

    let originals = [&root, &data, &logs];
    for payload in ["raw.zst", "qcow2"] {
        let tar = home.out(&format!("web-{payload}.tar"));
        let doc = json(&home.ok(&[
            "download",
            "vm/web",
            "-o",
            p(&tar),
            "--payload",
            payload,
            "-q",
            "--json",
        ]));
        assert_eq!(doc["output_size"], std::fs::metadata(&tar).unwrap().len());
        // Stock tools verify it.
        let dir = home.out(&format!("x-{payload}"));
        let checked = unpack_checked_bundle(&tar, &dir);
        assert_eq!(checked, 5, "manifest, vm.json and three disks");
        for (name, orig) in ["web-root", "web-data", "logs"].iter().zip(originals) {
            let f = dir.join(format!("disks/{name}.{payload}"));
            if payload == "qcow2" {
                tool("qemu-img", &["check", p(&f)]);
                tool("qemu-img", &["compare", p(&f), p(orig)]);
            } else {
                tool("zstd", &["-t", "-q", p(&f)]);
            }
        }
    }

    // To stdout, and published over HTTP(S): the same members, verified by stock tools.
    let piped = home.ok(&["download", "vm/web", "-o", "-", "-q"]);
    let from_stdout = home.out("stdout.tar");
    std::fs::write(&from_stdout, &piped.stdout).unwrap();
    let listed = tool("tar", &["-tf", p(&from_stdout)]);
    assert_eq!(listed.lines().count(), 6, "{listed}");
    let mut publisher = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args([
            "download",
            "vm/web",
            "--publish",
            "--json",
            "-q",
            "--max-downloads",
            "1",
        ])
        .env("SNAPPORT_HOME", home.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(publisher.stdout.take().unwrap()));
    let line = lines.next().unwrap().unwrap();
    let info: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(info["format"], "bundle");
    let fetched = home.out("published.tar");
    tool(
        "curl",
        &[
            "-s",
            "--fail",
            "-k",
            "--pinnedpubkey",
            info["pinned_pubkey"].as_str().unwrap(),
            "-H",
            &format!("Authorization: Bearer {}", info["token"].as_str().unwrap()),
            "-o",
            p(&fetched),
            info["url"].as_str().unwrap(),
        ],
    );
    let closing: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(closing["downloads"], 1);
    assert!(publisher.wait().unwrap().success());
    unpack_checked_bundle(&fetched, &home.out("x-published"));

    // Imported as a new VM: identical disks, new names, new MAC, IP cleared.
    let tar = home.out("web-raw.zst.tar");
    let doc = json(&home.ok(&["upload", p(&tar), "vm/copy", "-q", "-o", "json"]));
    let names: Vec<_> = doc["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vd/copy-root", "vd/copy-data", "vd/copy-logs"]);
    for (new, orig) in ["copy-root", "copy-data", "copy-logs"]
        .iter()
        .zip(originals)
    {
        tool(
            "qemu-img",
            &["compare", p(&pool.join(format!("{new}.qcow2"))), p(orig)],
        );
    }
    let copy = &json(&home.ok(&["get", "vm", "copy", "-o", "json"]))[0];
    assert_eq!(copy["cpu"], 2);
    assert_eq!(copy["disks"][2]["bus"], "virtio");
    assert_ne!(copy["network"][0]["mac"], "52:54:00:12:34:56");
    assert!(copy["network"][0]["ip"].is_null());

    // The qcow2 payloads, through stdin, with a name prefix.
    let q = home.out("web-qcow2.tar");
    let up = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["upload", "-", "vm/q", "--name-prefix", "q-", "-q"])
        .env("SNAPPORT_HOME", home.path())
        .stdin(std::fs::File::open(&q).unwrap())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    for (new, orig) in ["q-web-root", "q-web-data", "q-logs"].iter().zip(originals) {
        tool(
            "qemu-img",
            &["compare", p(&pool.join(format!("{new}.qcow2"))), p(orig)],
        );
    }

    // Refusals: nothing created, nothing left.
    let before = files_in(&pool);
    let vms = vm_names(&home);
    let err = home.fails(&["upload", p(&tar), "vm/copy"]);
    assert!(err.contains("already exists"), "{err}");
    let err = home.fails(&["upload", p(&tar), "vm/other", "--name-replace", "web=copy"]);
    assert!(
        err.contains("vd/copy-root") && err.contains("already exist"),
        "{err}"
    );

    let bytes = std::fs::read(&tar).unwrap();
    let m = members(&bytes);
    let names: Vec<_> = m.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(names[..3], ["SHA256SUMS", "manifest.json", "vm.json"]);
    // One flipped byte in the second disk's payload: the first disk is imported, then
    // deleted when the second fails its SHA-256.
    let (_, at, size) = m
        .iter()
        .find(|x| x.0 == "disks/web-data.raw.zst")
        .unwrap()
        .clone();
    let mut bad = bytes.clone();
    bad[at + size / 2] ^= 0x40;
    let badf = home.out("bad.tar");
    std::fs::write(&badf, &bad).unwrap();
    let err = home.fails(&["upload", p(&badf), "vm/bad", "-q"]);
    assert!(
        err.contains(
            "vm/bad was not created; the disks already imported were deleted: vd/bad-root:"
        ),
        "{err}"
    );
    // The first disk's payload damaged: nothing was imported, and nothing is said deleted.
    let (_, at, size) = m
        .iter()
        .find(|x| x.0 == "disks/web-root.raw.zst")
        .unwrap()
        .clone();
    let mut bad = bytes.clone();
    bad[at + size / 2] ^= 0x40;
    std::fs::write(&badf, &bad).unwrap();
    let err = home.fails(&["upload", p(&badf), "vm/bad", "-q"]);
    assert!(
        err.contains("vm/bad was not created; no disk was imported:"),
        "{err}"
    );
    // A flipped byte in a header, in the manifest, and a cut in the last payload.
    for (what, damaged) in [
        ("header", {
            let mut b = bytes.clone();
            b[5] ^= 1;
            b
        }),
        ("manifest", {
            let mut b = bytes.clone();
            b[m[1].1 + 20] ^= 1;
            b
        }),
        ("cut", bytes[..m[5].1 + m[5].2 / 2].to_vec()),
    ] {
        std::fs::write(&badf, &damaged).unwrap();
        let err = home.fails(&["upload", p(&badf), "vm/bad", "-q"]);
        assert!(
            err.contains("bundle") || err.contains("SHA256SUMS") || err.contains("zstd"),
            "{what}: {err}"
        );
        // Only disks that were imported are said to be deleted, by name.
        if what == "cut" {
            assert!(
                err.contains("the disks already imported were deleted: vd/bad-root, vd/bad-data:"),
                "{what}: {err}"
            );
        } else {
            assert!(!err.contains("deleted"), "{what}: {err}");
        }
    }
    assert_eq!(files_in(&pool), before);
    assert_eq!(vm_names(&home), vms);
    assert!(!Path::new(&home.path().join("vms/bad.json")).exists());
}

fn snapshot_raw(home: &Home, img: &Path, snap: &str) -> std::path::PathBuf {
    let raw = home.out(&format!(
        "{}-{snap}.raw",
        img.file_stem().unwrap().to_str().unwrap()
    ));
    if !raw.exists() {
        tool(
            "qemu-img",
            &[
                "convert",
                "-l",
                &format!("snapshot.name={snap}"),
                "-O",
                "raw",
                p(img),
                p(&raw),
            ],
        );
    }
    raw
}

fn sums(files: &[&std::path::PathBuf]) -> String {
    let args: Vec<&str> = files.iter().map(|f| p(f)).collect();
    tool("sha256sum", &args)
}

#[test]
fn vm_snapshots_restore_in_three_modes_and_export_as_bundles() {
    let home = Home::new();
    let pool = home.pool();
    let disks: Vec<_> = ["v-root", "v-data", "v-logs"]
        .iter()
        .map(|n| pool.join(format!("{n}.qcow2")))
        .collect();
    for (i, d) in disks.iter().enumerate() {
        tool("qemu-img", &["create", "-q", "-f", "qcow2", p(d), "64M"]);
        qemu_io(d, "qcow2", &[&format!("write -P {} 0 2M", 0x10 + i)]);
    }
    let cfg = home.out("v.json");
    std::fs::write(&cfg, r#"{"name":"v","disks":[{"name":"v-root"},{"name":"v-data"},{"name":"v-logs"}],"network":[{"mac":"52:54:00:00:00:07"}]}"#).unwrap();
    home.ok(&["create", "vm/v", "--config", p(&cfg), "-q"]);

    // A failing pre-hook with --consistency required: nothing taken, the attempt Failed.
    let err = home.fails(&[
        "snapshot",
        "create",
        "vm/v",
        "--name",
        "bad",
        "--consistency",
        "required",
        "--pre-hook",
        "exit 3",
    ]);
    assert!(err.contains("not taken"), "{err}");
    for d in &disks {
        assert!(!tool("qemu-img", &["snapshot", "-l", p(d)]).contains("bad"));
    }
    let vms = json(&home.ok(&["get", "vms", "-o", "json"]));
    assert_eq!(vms[0]["phase"], "Failed");

    let s1 = json(&home.ok(&["snapshot", "create", "vm/v", "--name", "s1", "-o", "json"]));
    assert_eq!(
        (s1["phase"].as_str(), s1["consistent"].as_bool()),
        (Some("Ready"), Some(true))
    );
    for d in &disks {
        assert!(tool("qemu-img", &["snapshot", "-l", p(d)]).contains("s1"));
        tool("qemu-img", &["check", p(d)]);
        qemu_io(d, "qcow2", &["write -P 0x77 1M 2M"]);
    }
    home.ok(&["snapshot", "create", "vm/v", "--name", "s2", "-q"]);
    for d in &disks {
        qemu_io(d, "qcow2", &["write -P 0x88 8M 1M"]);
    }

    // dry-run changes nothing; strict refuses (s2 was taken after s1).
    let before = sums(&disks.iter().collect::<Vec<_>>());
    let listing = tool("qemu-img", &["snapshot", "-l", p(&disks[0])]);
    let files = files_in(&pool);
    let dry = json(&home.ok(&["restore", "vm/v", "--from", "vms/v@s1", "-o", "json"]));
    assert_eq!(dry["restored"], false);
    let err = home.fails(&["restore", "vm/v", "--from", "vms/v@s1", "--mode", "strict"]);
    assert!(err.contains("taken after"), "{err}");
    assert_eq!(sums(&disks.iter().collect::<Vec<_>>()), before);
    assert_eq!(tool("qemu-img", &["snapshot", "-l", p(&disks[0])]), listing);
    assert_eq!(files_in(&pool), files);
    // best-effort restores every disk to s1.
    let done = json(&home.ok(&[
        "restore",
        "vm/v",
        "--from",
        "vms/v@s1",
        "--mode",
        "best-effort",
        "-o",
        "json",
    ]));
    assert_eq!(done["restored"], true);
    for d in &disks {
        tool(
            "qemu-img",
            &[
                "compare",
                "-F",
                "raw",
                p(d),
                p(&snapshot_raw(&home, d, "s1")),
            ],
        );
    }

    // A missing dependency: strict refuses, best-effort leaves the disk out and says so.
    home.ok(&["delete", "vds/v-data@s2", "-q"]);
    let data_before = sums(&[&disks[1]]);
    let err = home.fails(&["restore", "vm/v", "--from", "vms/v@s2", "--mode", "strict"]);
    assert!(err.contains("missing dependency"), "{err}");
    let done = json(&home.ok(&[
        "restore",
        "vm/v",
        "--from",
        "vms/v@s2",
        "--mode",
        "best-effort",
        "-o",
        "json",
    ]));
    assert_eq!(done["dropped"], serde_json::json!(["vd/v-data"]));
    tool(
        "qemu-img",
        &[
            "compare",
            "-F",
            "raw",
            p(&disks[0]),
            p(&snapshot_raw(&home, &disks[0], "s2")),
        ],
    );
    assert_eq!(sums(&[&disks[1]]), data_before);
    let v = json(&home.ok(&["get", "vm", "v", "-o", "json"]));
    assert_eq!(v[0]["disks"].as_array().unwrap().len(), 2);

    // A VM snapshot as a bundle: stock tools verify it; imported, it is the snapshot.
    let tar = home.out("v-s1.tar");
    let doc = json(&home.ok(&["download", "vms/v@s1", "-o", p(&tar), "-q", "--json"]));
    assert_eq!(doc["snapshot"], "vms/v@s1");
    assert_eq!(doc["consistent"], true);
    unpack_checked_bundle(&tar, &home.out("x-s1"));
    home.ok(&["upload", p(&tar), "vm/w", "-q"]);
    for (n, d) in ["w-root", "w-data", "w-logs"].iter().zip(&disks) {
        tool(
            "qemu-img",
            &[
                "compare",
                "-F",
                "raw",
                p(&pool.join(format!("{n}.qcow2"))),
                p(&snapshot_raw(&home, d, "s1")),
            ],
        );
    }

    // Deleting the VM snapshot deletes its disks' snapshots.
    home.ok(&["delete", "vms/v@s1", "-q"]);
    for d in &disks {
        assert!(!tool("qemu-img", &["snapshot", "-l", p(d)]).contains("s1"));
    }
    let names: Vec<_> = json(&home.ok(&["get", "vms", "v", "-o", "json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["vms/v@bad", "vms/v@s2"]);
}

#[test]
fn clones_rename_copy_and_refuse_conflicts_in_strict_mode() {
    let home = Home::new();
    let pool = home.pool();
    let disks: Vec<_> = ["c-root", "c-data"]
        .iter()
        .map(|n| pool.join(format!("{n}.qcow2")))
        .collect();
    for d in &disks {
        tool("qemu-img", &["create", "-q", "-f", "qcow2", p(d), "32M"]);
        qemu_io(d, "qcow2", &["write -P 0x31 0 1M"]);
    }
    let cfg = home.out("c.json");
    std::fs::write(&cfg, r#"{"name":"c","disks":[{"name":"c-root"},{"name":"c-data"}],"network":[{"mac":"52:54:00:00:00:09","ip":"10.1.1.1"}]}"#).unwrap();
    home.ok(&["create", "vm/c", "--config", p(&cfg), "-q"]);
    home.ok(&["snapshot", "create", "vm/c", "--name", "s1", "-q"]);
    for d in &disks {
        qemu_io(d, "qcow2", &["write -P 0x32 4M 1M"]);
    }

    // From the VM now, and from its snapshot with a prefix.
    let doc = json(&home.ok(&["clone", "vm/c", "--to", "vm/d", "-o", "json"]));
    assert_eq!(doc["cloned"], true);
    assert_ne!(doc["config"]["network"][0]["mac"], "52:54:00:00:00:09");
    assert!(doc["config"]["network"][0]["ip"].is_null());
    for (n, d) in ["d-root", "d-data"].iter().zip(&disks) {
        tool(
            "qemu-img",
            &["compare", p(&pool.join(format!("{n}.qcow2"))), p(d)],
        );
    }
    home.ok(&[
        "clone",
        "vms/c@s1",
        "--to",
        "vm/e",
        "--name-prefix",
        "x-",
        "-q",
    ]);
    for (n, d) in ["x-c-root", "x-c-data"].iter().zip(&disks) {
        let raw = home.out(&format!("{n}.s1.raw"));
        tool(
            "qemu-img",
            &[
                "convert",
                "-l",
                "snapshot.name=s1",
                "-O",
                "raw",
                p(d),
                p(&raw),
            ],
        );
        tool(
            "qemu-img",
            &[
                "compare",
                "-F",
                "raw",
                p(&pool.join(format!("{n}.qcow2"))),
                p(&raw),
            ],
        );
    }

    // A taken name: strict refuses, dry-run reports, nothing changes; best-effort numbers.
    let before = files_in(&pool);
    let vms = vm_names(&home);
    let err = home.fails(&["clone", "vm/c", "--to", "vm/f", "--name-replace", "c-=d-"]);
    assert!(err.contains("vd/d-root exists"), "{err}");
    let err = home.fails(&["clone", "vm/c", "--to", "vm/d", "--name-prefix", "new-"]);
    assert!(err.contains("vm/d exists"), "{err}");
    let dry = json(&home.ok(&[
        "clone",
        "vm/c",
        "--to",
        "vm/f",
        "--name-replace",
        "c-=d-",
        "--mode",
        "dry-run",
        "-o",
        "json",
    ]));
    assert_eq!(dry["cloned"], false);
    assert_eq!(dry["conflicts"].as_array().unwrap().len(), 2);
    assert_eq!(files_in(&pool), before);
    assert_eq!(vm_names(&home), vms);
    let doc = json(&home.ok(&[
        "clone",
        "vm/c",
        "--to",
        "vm/f",
        "--name-replace",
        "c-=d-",
        "--mode",
        "best-effort",
        "-o",
        "json",
    ]));
    let names: Vec<_> = doc["config"]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["d-root-2", "d-data-2"]);
    for (n, d) in names.iter().zip(&disks) {
        tool(
            "qemu-img",
            &["compare", p(&pool.join(format!("{n}.qcow2"))), p(d)],
        );
    }
}

/// A VM snapshot's disk snapshot is the one taken with it: after it is deleted and a
/// disk snapshot of the same name is taken by itself, the VM snapshot does not take that
/// one for its own (restore says the disk snapshot is missing; delete leaves it).
#[test]
fn a_vm_snapshot_never_takes_a_later_disk_snapshot_of_its_name() {
    let home = Home::new();
    let pool = home.pool();
    let disks: Vec<_> = ["w-root", "w-data"]
        .iter()
        .map(|n| pool.join(format!("{n}.qcow2")))
        .collect();
    for (i, d) in disks.iter().enumerate() {
        tool("qemu-img", &["create", "-q", "-f", "qcow2", p(d), "16M"]);
        qemu_io(d, "qcow2", &[&format!("write -P {} 0 1M", 0x20 + i)]);
    }
    let cfg = home.out("w.json");
    std::fs::write(
        &cfg,
        r#"{"name":"w","disks":[{"name":"w-root"},{"name":"w-data"}]}"#,
    )
    .unwrap();
    home.ok(&["create", "vm/w", "--config", p(&cfg), "-q"]);
    home.ok(&["snapshot", "create", "vm/w", "--name", "daily", "-q"]);
    home.ok(&["delete", "vds/w-data@daily", "-q"]);
    qemu_io(&disks[1], "qcow2", &["write -P 0x77 0 1M"]);
    home.ok(&["snapshot", "create", "vd/w-data", "--name", "daily", "-q"]);
    let before = tool("sha256sum", &[p(&disks[1])]);

    // strict: the VM snapshot's disk snapshot of w-data is missing, so nothing happens.
    let err = home.fails(&[
        "restore",
        "vm/w",
        "--from",
        "vms/w@daily",
        "--mode",
        "strict",
    ]);
    assert!(err.contains("missing dependency"), "{err}");
    assert_eq!(tool("sha256sum", &[p(&disks[1])]), before);
    // Deleting the VM snapshot leaves the disk's own `daily`.
    home.ok(&["delete", "vms/w@daily", "-q"]);
    let listed = tool("qemu-img", &["snapshot", "-l", p(&disks[1])]);
    assert!(listed.contains("daily"), "{listed}");
    let listed = tool("qemu-img", &["snapshot", "-l", p(&disks[0])]);
    assert!(!listed.contains("daily"), "{listed}");
}
