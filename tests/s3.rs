//! `s3://BUCKET/KEY` outputs and sources against a real S3 server: s3s-fs, started by
//! the tests in this process over a temporary folder (tests/common/s3_server.rs). The
//! objects are files in that folder, so the oracles read them directly: cmp, qemu-img
//! check/compare, zstd, `sha256sum -c` beside them, Debian's `age -d`; and the server's
//! own folder says whether an unfinished multipart upload is left.

mod common;
#[path = "common/s3_server.rs"]
mod s3_server;
use common::*;
use s3_server::{S3Server, BUCKET};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A home whose snapport runs talk to `server`, with `vd/src` (24 MiB, three regions)
/// and that disk exported locally as raw (`plain`, with its digest sidecar).
fn lab(server: &S3Server) -> (Home, PathBuf) {
    let mut home = Home::new();
    home.env = server.env(home.path());
    src_disk(&home);
    let plain = home.out("plain.raw");
    home.ok(&["download", "vd/src", "-q", "-o", p(&plain)]);
    (home, plain)
}

/// A home whose snapport runs talk to `server`, with `vd/big`: a qcow2 disk of `mib` MiB
/// of random data, and that data as a raw file.
fn random_disk(server: &S3Server, mib: u64) -> (Home, PathBuf) {
    let mut home = Home::new();
    home.env = server.env(home.path());
    let raw = home.out("big-source.raw");
    random_file(&raw, mib);
    let img = home.pool().join("big.qcow2");
    tool(
        "qemu-img",
        &["convert", "-q", "-O", "qcow2", p(&raw), p(&img)],
    );
    (home, raw)
}

/// `snapport ARGS` with `home`'s folder and environment, to spawn.
fn snapport_command(home: &Home, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_snapport"));
    c.args(args)
        .env("SNAPPORT_HOME", home.path())
        .envs(home.env.iter().map(|(k, v)| (k, v)));
    c
}

fn url(key: &str) -> String {
    format!("s3://{BUCKET}/{key}")
}

/// Uploads `source` to `vd/NAME`, which must verify a digest; exports the new disk as
/// raw and compares it with `plain`.
fn round_trip(home: &Home, source: &str, name: &str, plain: &Path, extra: &[&str]) {
    let mut args = vec![
        "upload",
        source,
        &*Box::leak(format!("vd/{name}").into_boxed_str()),
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = home.ok(&args);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("upload -o json");
    assert!(
        doc["verified"].as_array().is_some_and(|v| !v.is_empty()),
        "{source}: a digest should have been verified: {doc}"
    );
    let back = home.out(&format!("{name}.raw"));
    home.ok(&["download", &format!("vd/{name}"), "-q", "-o", p(&back)]);
    tool("cmp", &[p(&back), p(plain)]);
}

#[test]
fn every_format_round_trips_through_an_object() {
    let server = S3Server::start();
    let (home, plain) = lab(&server);
    for format in ["raw", "qcow2", "raw.zst"] {
        let key = format!("vm/src.{format}");
        home.ok(&[
            "download",
            "vd/src",
            "-q",
            "--format",
            format,
            "--sha256sum",
            "-o",
            &url(&key),
        ]);
        let object = server.object(&key);
        same_image(format, &object, &plain, &home.out("from-zst.raw"));
        // The sidecars are objects beside it: `sha256sum -c` checks the object, and the
        // content digest is the disk's.
        sha256sum_check(&object);
        assert_eq!(sidecar_digest(&object), sidecar_digest(&plain), "{format}");
        round_trip(
            &home,
            &url(&key),
            &format!("back-{}", format.replace('.', "-")),
            &plain,
            &[],
        );
    }
    assert!(server.unfinished().is_empty(), "{:?}", server.unfinished());
    assert!(files_in(&home.path().join("s3-uploads")).is_empty());
}

#[test]
fn a_300_mib_export_goes_up_in_parts_and_comes_back_in_ranges() {
    let server = S3Server::start();
    let (home, raw) = random_disk(&server, 300);
    server.take_ops();
    home.ok(&["download", "vd/big", "-q", "-o", &url("big.raw")]);
    let ops = server.take_ops();
    let count = |op: &str| ops.iter().filter(|o| *o == op).count();
    assert_eq!(count("CreateMultipartUpload big.raw"), 1, "{ops:?}");
    assert!(
        count("UploadPart big.raw") >= 19,
        "300 MiB in 16 MiB parts: {ops:?}"
    );
    assert_eq!(count("CompleteMultipartUpload big.raw"), 1, "{ops:?}");
    tool("cmp", &[p(&server.object("big.raw")), p(&raw)]);
    assert!(server.unfinished().is_empty());

    let out = home.ok(&["upload", &url("big.raw"), "vd/big-back", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["verified"].as_array().is_some_and(|v| !v.is_empty()),
        "{doc}"
    );
    let ranges = server
        .take_ops()
        .iter()
        .filter(|o| *o == "GetObject big.raw")
        .count();
    assert!(ranges >= 38, "300 MiB in 8 MiB ranges: {ranges} GETs");
    tool(
        "qemu-img",
        &[
            "compare",
            "-F",
            "raw",
            p(&home.pool().join("big-back.qcow2")),
            p(&raw),
        ],
    );
}

#[test]
fn a_killed_export_leaves_no_object_and_the_next_one_aborts_its_upload() {
    let server = S3Server::start();
    let (home, raw) = random_disk(&server, 200);
    let mut child = snapport_command(
        &home,
        &["download", "vd/big", "-q", "-o", &url("vm/big.raw")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Killed once the server holds a part of it.
    let started = Instant::now();
    while !server.unfinished().iter().any(|n| n.contains(".part-")) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended before a part was sent"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no part arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !server.object("vm/big.raw").exists(),
        "a killed export left an object"
    );
    assert!(
        !server.unfinished().is_empty(),
        "the killed upload should still be on the server"
    );

    // The next export of the same key aborts it (s3s-fs lists no unfinished uploads:
    // the journal in SNAPPORT_HOME says which), then writes the object.
    home.ok(&["download", "vd/big", "-q", "-o", &url("vm/big.raw")]);
    assert!(server.unfinished().is_empty(), "{:?}", server.unfinished());
    tool("cmp", &[p(&server.object("vm/big.raw")), p(&raw)]);
    assert!(files_in(&home.path().join("s3-uploads")).is_empty());
}

/// An export that fails once its upload has started (a part refused; the completion
/// refused) aborts the upload and leaves the earlier object and its sidecars as they
/// were; a completion that took effect but answered an error leaves the new object with
/// the sidecars that describe it, not the old ones.
#[test]
fn a_failed_export_aborts_its_upload_and_leaves_the_object_beside_true_sidecars() {
    let server = S3Server::start();
    let (home, _) = random_disk(&server, 40);
    let key = "vm/big.raw";
    let export = [
        "download",
        "vd/big",
        "-q",
        "--sha256sum",
        "--force",
        "-o",
        &url(key),
    ];
    home.ok(&export);
    let object = server.object(key);
    let sidecars = [
        server.object("vm/big.raw.digest"),
        server.object("vm/big.raw.sha256"),
    ];
    let read = |p: &Path| std::fs::read(p).unwrap();
    let old = read(&object);
    let old_sidecars: Vec<_> = sidecars.iter().map(|s| read(s)).collect();
    // The disk changes: the next export has other bytes and other digests.
    qemu_io(
        &home.pool().join("big.qcow2"),
        "qcow2",
        &["write -P 0x5a 0 1M"],
    );

    // 40 MiB go as three parts: the first refused, or all three sent and the completion
    // refused.
    for op in ["UploadPart", "CompleteMultipartUpload"] {
        server.refuse(op);
        server.take_ops();
        let e = home.fails(&export);
        // A refused part: s3s answers 403 before reading the 16 MiB body and closes the
        // connection, so the client may see its write fail (broken pipe) rather than the
        // answer, as against AWS; either way the line names a part (of the three in flight).
        let said = if op == "UploadPart" {
            "sending part "
        } else {
            "AccessDenied"
        };
        assert!(e.contains(said), "{op}: {e}");
        let ops = server.take_ops();
        assert!(
            ops.iter()
                .any(|o| o == &format!("AbortMultipartUpload {key}")),
            "{op}: the upload was not aborted: {ops:?}"
        );
        assert!(
            server.unfinished().is_empty(),
            "{op}: {:?}",
            server.unfinished()
        );
        assert!(read(&object) == old, "{op}: the object changed");
        for (s, before) in sidecars.iter().zip(&old_sidecars) {
            assert_eq!(&read(s), before, "{op}: {} changed", s.display());
        }
        sha256sum_check(&object);
        assert!(files_in(&home.path().join("s3-uploads")).is_empty());
        server.heal();
    }

    // The completion assembles the object, then answers 500: the export stands, and
    // leaves no record of an upload to abort (s3s-fs refuses to abort a completed one:
    // the next export would fail on it).
    server.fail_completion_answers();
    home.ok(&export);
    server.heal();
    assert!(server.unfinished().is_empty(), "{:?}", server.unfinished());
    assert!(files_in(&home.path().join("s3-uploads")).is_empty());
    let now = home.out("now.raw");
    home.ok(&["download", "vd/big", "-q", "-o", p(&now)]);
    tool("cmp", &[p(&object), p(&now)]);
    sha256sum_check(&object);
    // The digest sidecar describes the new object: an import verifies against it.
    round_trip(&home, &url(key), "back", &now, &[]);
    home.ok(&export);
}

#[test]
fn refusals_say_one_line_and_import_nothing() {
    let server = S3Server::start();
    let (mut home, plain) = lab(&server);
    home.ok(&["download", "vd/src", "-q", "-o", &url("src.raw")]);
    let pool_before = files_in(&home.pool());

    let e = home.fails(&["download", "vd/src", "-q", "-o", "s3://nobucket/x.raw"]);
    assert!(e.contains("no bucket nobucket"), "{e}");
    let e = home.fails(&["upload", "s3://nobucket/x.raw", "vd/x"]);
    assert!(e.contains("no bucket nobucket"), "{e}");
    let e = home.fails(&["upload", &url("missing.raw"), "vd/x"]);
    assert!(e.contains("no such object"), "{e}");
    let e = home.fails(&["download", "vd/src", "-q", "-o", &url("src.raw")]);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    let e = home.usage_fails(&["download", "vd/src", "-q", "-o", "s3://Bad_Bucket/k"]);
    assert!(e.contains("s3://BUCKET/KEY"), "{e}");
    // A '..' in the key would take a path-style URL into another bucket: refused.
    let e = home.usage_fails(&["download", "vd/src", "-q", "-o", "s3://backups/../victim/k"]);
    assert!(e.contains("'..' segment"), "{e}");
    // A wrong digest: nothing imported.
    let e = home.fails(&[
        "upload",
        &url("src.raw"),
        "vd/x",
        "--digest",
        "sha256-64k-4m:0000000000000000000000000000000000000000000000000000000000000000",
    ]);
    assert!(e.contains("mismatch"), "{e}");
    // A digest sidecar that does not match the object (one digit changed): refused.
    let digest = sidecar_digest(&plain);
    let last = if digest.ends_with('0') { "1" } else { "0" };
    std::fs::write(
        server.object("src.raw.digest"),
        format!("{}{last}  src.raw\n", &digest[..digest.len() - 1]),
    )
    .unwrap();
    let e = home.fails(&["upload", &url("src.raw"), "vd/x"]);
    assert!(e.contains("mismatch"), "{e}");
    // Refused credentials, for export and import.
    for (k, v) in home.env.iter_mut() {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "wrong".into();
        }
    }
    let e = home.fails(&["download", "vd/src", "-q", "-o", &url("other.raw")]);
    assert!(e.contains("refused the credentials"), "{e}");
    let e = home.fails(&["upload", &url("src.raw"), "vd/x"]);
    assert!(e.contains("refused the credentials"), "{e}");
    assert_eq!(files_in(&home.pool()), pool_before);
    assert!(!server.object("other.raw").exists());
    assert!(server.unfinished().is_empty());
}

#[test]
fn encrypted_objects_decrypt_with_stock_age_and_upload_with_the_identity() {
    let server = S3Server::start();
    let (home, plain) = lab(&server);
    let key = home.path().join("key.txt");
    tool("age-keygen", &["-o", p(&key)]);
    let recipient = tool("age-keygen", &["-y", p(&key)]).trim().to_string();
    for format in ["raw", "raw.zst"] {
        let name = format!("enc.{format}.age");
        home.ok(&[
            "download",
            "vd/src",
            "-q",
            "--format",
            format,
            "--encrypt-to",
            &recipient,
            "-o",
            &url(&name),
        ]);
        let object = server.object(&name);
        assert!(std::fs::read(&object)
            .unwrap()
            .starts_with(b"age-encryption.org/v1\n"));
        // The digest only encrypted: no OBJECT.digest, an OBJECT.digest.age.
        assert!(!server.object(&format!("{name}.digest")).exists());
        assert!(server.object(&format!("{name}.digest.age")).exists());
        let dec = home.out(&format!("dec.{format}"));
        tool("age", &["-d", "-i", p(&key), "-o", p(&dec), p(&object)]);
        same_image(format, &dec, &plain, &home.out("dec.zst.raw"));
        round_trip(
            &home,
            &url(&name),
            &format!("dec-{}", format.replace('.', "-")),
            &plain,
            &["--identity", p(&key)],
        );
    }
}

#[test]
fn bundles_and_deltas_go_to_objects_and_come_back() {
    let server = S3Server::start();
    let mut home = Home::new();
    home.env = server.env(home.path());
    let img = home.pool().join("web-root.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "64M"]);
    qemu_io(
        &img,
        "qcow2",
        &["write -P 0x11 0 8M", "write -P 0x22 40M 3M"],
    );
    home.ok(&["snapshot", "create", "vd/web-root", "--name", "s1", "-q"]);
    qemu_io(&img, "qcow2", &["write -P 0x33 4M 2M", "write -z 40M 1M"]);
    home.ok(&["snapshot", "create", "vd/web-root", "--name", "s2", "-q"]);

    // A delta into an object, applied from the object onto the base.
    let out = home.ok(&[
        "download",
        "vds/web-root@s2",
        "--since",
        "vds/web-root@s1",
        "-o",
        &url("web@s2.delta"),
        "-q",
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["output_size"].as_u64().unwrap(),
        std::fs::metadata(server.object("web@s2.delta"))
            .unwrap()
            .len()
    );
    let out = home.ok(&[
        "upload",
        &url("web@s2.delta"),
        "vd/r",
        "--onto",
        "vds/web-root@s1",
        "-q",
        "-o",
        "json",
    ]);
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(applied["content_digest"], doc["target_digest"]);
    let s2 = home.out("s2.raw");
    tool(
        "qemu-img",
        &[
            "convert",
            "-l",
            "snapshot.name=s2",
            "-O",
            "raw",
            p(&img),
            p(&s2),
        ],
    );
    tool(
        "qemu-img",
        &[
            "compare",
            "-F",
            "raw",
            p(&home.pool().join("r.qcow2")),
            p(&s2),
        ],
    );

    // A VM bundle into an object: tar and sha256sum -c read it; it imports as a new VM.
    let cfg = home.out("web.json");
    std::fs::write(&cfg, r#"{"name":"web","disks":[{"name":"web-root"}]}"#).unwrap();
    home.ok(&["create", "vm/web", "--config", p(&cfg), "-q"]);
    home.ok(&["download", "vm/web", "-o", &url("web.tar"), "-q"]);
    unpack_checked_bundle(&server.object("web.tar"), &home.out("x"));
    home.ok(&["upload", &url("web.tar"), "vm/copy", "-q"]);
    tool(
        "qemu-img",
        &["compare", p(&home.pool().join("copy-root.qcow2")), p(&img)],
    );
    assert!(server.unfinished().is_empty());
}

/// The peak resident memory of `child` once it ends (wait4's rusage), in bytes, and
/// whether it succeeded.
fn wait_peak_rss(child: std::process::Child) -> (bool, u64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be written over.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child by its pid, writing into the two locals.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, child.id() as i32, "wait4");
    (
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        usage.ru_maxrss as u64 * 1024,
    )
}

#[test]
fn a_2_gib_export_to_an_object_stays_under_256_mib_of_memory() {
    let server = S3Server::start();
    let mut home = Home::new();
    home.env = server.env(home.path());
    let img = home.pool().join("big.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "2G"]);
    qemu_io(
        &img,
        "qcow2",
        &["write -P 0x6b 0 1G", "write -P 0x6c 1G 1G"],
    );
    let child = snapport_command(&home, &["download", "vd/big", "-q", "-o", &url("big.raw")])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (ok, peak) = wait_peak_rss(child);
    assert!(ok, "the export failed");
    eprintln!("peak RSS of a 2 GiB export to S3: {} MiB", peak >> 20);
    assert!(peak < 256 << 20, "peak RSS {} MiB", peak >> 20);
    tool(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            p(&server.object("big.raw")),
            p(&img),
        ],
    );
}
