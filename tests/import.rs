//! Import: uploads from files, stdin and URLs, disks from images and snapshots, deletes;
//! and every way an import can fail, each leaving the pool as it was. Oracles: qemu-img
//! (check, compare, info), zstd, sha256sum, and the pool's own listing.

mod common;
use common::*;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A 24 MiB qcow2 `vd/src` with data in three places, exported to raw, raw.zst and qcow2
/// (with content digests and sha256 sidecars) in the output folder.
fn exported() -> (Home, PathBuf) {
    let home = Home::new();
    let img = src_disk(&home);
    for (name, format) in [
        ("src.raw", "raw"),
        ("src.zst", "raw.zst"),
        ("src.q2", "qcow2"),
    ] {
        let out = home.out(name);
        home.ok(&[
            "download",
            "vd/src",
            "-o",
            p(&out),
            "--format",
            format,
            "--sha256sum",
            "-q",
        ]);
    }
    (home, img)
}

/// What the pool holds, as its files (hidden ones included) and its listings.
fn pool_state(home: &Home) -> (Vec<String>, String, String) {
    let list = |kind: &str| {
        let out = home.ok(&["get", kind, "-o", "json"]);
        let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        docs.as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    (files_in(&home.pool()), list("vd"), list("vi"))
}

/// The command must fail with one line containing `expect`, and leave the pool as it was.
fn refused(home: &Home, args: &[&str], expect: &str) {
    let before = pool_state(home);
    let line = home.fails(args);
    assert!(line.contains(expect), "expected {expect:?} in: {line}");
    assert_eq!(pool_state(home), before, "the pool changed after: {line}");
}

fn copy_with(from: &Path, to: &Path, edit: impl FnOnce(&std::fs::File, u64)) {
    std::fs::copy(from, to).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(to)
        .unwrap();
    let len = f.metadata().unwrap().len();
    edit(&f, len);
}

#[test]
fn uploads_from_file_and_stdin_verify_and_keep_sparseness() {
    let (home, img) = exported();
    for (name, file) in [("a", "src.raw"), ("b", "src.zst"), ("c", "src.q2")] {
        let out = home.ok(&[
            "upload",
            p(&home.out(file)),
            &format!("vd/{name}"),
            "-o",
            "json",
        ]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // Both sidecars were found and checked.
        assert_eq!(doc["verified"].as_array().unwrap().len(), 2, "{doc}");
        let new = home.pool().join(format!("{name}.qcow2"));
        tool("qemu-img", &["check", p(&new)]);
        tool("qemu-img", &["compare", p(&img), p(&new)]);
        assert!(allocated(&new) <= (5 << 20) + (1 << 20) + (512 << 10));
    }
    // stdin: raw needs --size; snapport's raw.zst records its size.
    for (name, file, extra) in [
        ("d", "src.raw", vec!["--size", "24M"]),
        ("e", "src.zst", vec![]),
    ] {
        let mut args = vec!["upload", "-", &*format!("vd/{name}"), "-q"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let status = Command::new(env!("CARGO_BIN_EXE_snapport"))
            .args(&args)
            .env("SNAPPORT_HOME", home.path())
            .stdin(std::fs::File::open(home.out(file)).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "upload {file} from stdin");
        tool(
            "qemu-img",
            &[
                "compare",
                p(&img),
                p(&home.pool().join(format!("{name}.qcow2"))),
            ],
        );
    }
    // A larger disk than the source: the rest reads as zeros.
    home.ok(&[
        "upload",
        p(&home.out("src.raw")),
        "vd/big",
        "--size",
        "1G",
        "-q",
    ]);
    let big = home.pool().join("big.qcow2");
    tool("qemu-img", &["check", p(&big)]);
    let info = tool("qemu-img", &["info", "--output=json", p(&big)]);
    assert!(info.contains("\"virtual-size\": 1073741824"), "{info}");
    tool("qemu-img", &["compare", p(&img), p(&big)]);
    // The command-line digests are checked too.
    let sum = tool("sha256sum", &[p(&home.out("src.raw"))]);
    let hex = sum.split_whitespace().next().unwrap();
    let digest = sidecar_digest(&home.out("src.raw"));
    home.ok(&[
        "upload",
        p(&home.out("src.raw")),
        "vd/f",
        "--no-sidecars",
        "--sha256",
        hex,
        "--digest",
        &digest,
        "-q",
    ]);
    assert_eq!(
        pool_state(&home).1,
        "vd/a,vd/b,vd/big,vd/c,vd/d,vd/e,vd/f,vd/src"
    );
}

#[test]
fn raw_pool_imports_as_sparse_raw_files() {
    let (home, img) = exported();
    let dir = home.path().join("rawpool");
    std::fs::create_dir_all(&dir).unwrap();
    home.write_config(&format!(
        "[pools.r]\nplugin = \"raw\"\nfolders = [\"{}\"]\nwritable = true\n",
        dir.display()
    ));
    home.ok(&["upload", p(&home.out("src.q2")), "vd/x", "-n", "r", "-q"]);
    let x = dir.join("x.raw");
    tool("qemu-img", &["compare", "-F", "raw", p(&img), p(&x)]);
    assert!(allocated(&x) <= 6 << 20, "{} allocated", allocated(&x));
    home.ok(&["upload", p(&home.out("src.zst")), "vi/y", "-n", "r", "-q"]);
    tool(
        "qemu-img",
        &["compare", "-F", "raw", p(&img), p(&dir.join("y.image.raw"))],
    );
    home.ok(&["delete", "vd/x", "-n", "r", "-q"]);
    assert_eq!(files_in(&dir), vec!["y.image.raw"]);
}

/// A loopback HTTP server over `dir` (Python's http.server), on a free port.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let script = r#"
import http.server, socketserver, sys, functools
http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
with socketserver.TCPServer(("127.0.0.1", 0), handler) as s:
    print(s.server_address[1], flush=True)
    s.serve_forever()
"#;
        let mut child = Command::new("python3")
            .args(["-c", script, p(dir)])
            .stdout(Stdio::piped())
            // A client that stops reading (a refused qcow2) makes it print a traceback.
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        Server {
            child,
            port: line.trim().parse().expect("a port"),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn uploads_from_a_url_are_streamed_and_verified() {
    let (home, img) = exported();
    let server = Server::start(home.out("x").parent().unwrap());
    for (name, file) in [("u1", "src.raw"), ("u2", "src.zst")] {
        let out = home.ok(&[
            "upload",
            &server.url(file),
            &format!("vd/{name}"),
            "-o",
            "json",
        ]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let verified = doc["verified"].as_array().unwrap();
        assert_eq!(verified.len(), 2, "sidecars fetched from the server: {doc}");
        tool(
            "qemu-img",
            &[
                "compare",
                p(&img),
                p(&home.pool().join(format!("{name}.qcow2"))),
            ],
        );
    }
    // qcow2 needs random access; a missing file is the server's 404.
    refused(
        &home,
        &["upload", &server.url("src.q2"), "vd/u3"],
        "needs random access",
    );
    refused(
        &home,
        &["upload", &server.url("nothing.raw"), "vd/u3"],
        "404",
    );
    // A sidecar that disagrees with the bytes stops the import before commit.
    std::fs::write(
        home.out("src.zst.sha256"),
        format!("{}  src.zst\n", "0".repeat(64)),
    )
    .unwrap();
    refused(
        &home,
        &["upload", &server.url("src.zst"), "vd/u3"],
        "SHA-256 mismatch",
    );
}

#[test]
fn disks_from_images_and_snapshots_full_and_thin_and_deletes() {
    let (home, img) = exported();
    tool("qemu-img", &["snapshot", "-c", "s1", p(&img)]);
    qemu_io(&img, "qcow2", &["write -P 0x77 0 2m"]);
    // An image from a snapshot, a disk from the image (full and thin), a disk from the
    // snapshot directly.
    home.ok(&["create", "vi/golden", "--from", "vds/src@s1", "-q"]);
    home.ok(&["create", "vd/full", "--from", "vi/golden", "-q"]);
    home.ok(&[
        "create",
        "vd/thin",
        "--from",
        "vi/golden",
        "--thin",
        "--size",
        "64M",
        "-q",
    ]);
    home.ok(&["create", "vd/fromsnap", "--from", "vds/src@s1", "-q"]);
    let oracle = home.out("s1.raw");
    tool(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            "-l",
            "snapshot.name=s1",
            p(&img),
            p(&oracle),
        ],
    );
    let pool = home.pool();
    for f in ["golden.image.qcow2", "full.qcow2", "fromsnap.qcow2"] {
        tool("qemu-img", &["check", p(&pool.join(f))]);
        tool(
            "qemu-img",
            &["compare", "-F", "raw", p(&pool.join(f)), p(&oracle)],
        );
    }
    let thin = pool.join("thin.qcow2");
    tool("qemu-img", &["check", p(&thin)]);
    let info = tool("qemu-img", &["info", "--output=json", p(&thin)]);
    assert!(
        info.contains("\"backing-filename\": \"golden.image.qcow2\""),
        "{info}"
    );
    assert!(allocated(&thin) < 1 << 20, "a thin clone holds no data");
    // The clone reads through; its larger tail reads as zeros.
    tool("qemu-img", &["compare", p(&thin), p(&oracle)]);
    assert_eq!(pool_state(&home).2, "vi/golden");

    // Thin clones come from images only; addresses must match kinds.
    refused(
        &home,
        &["create", "vd/t2", "--from", "vd/full", "--thin"],
        "from an image",
    );
    refused(
        &home,
        &["create", "vd/t2", "--from", "vd/golden"],
        "is an image",
    );
    refused(
        &home,
        &["create", "vd/full", "--from", "vi/golden"],
        "exists already",
    );
    refused(
        &home,
        &["create", "vd/t3", "--from", "vi/golden", "--size", "1M"],
        "smaller",
    );
    // The image is what the thin clone reads: delete refuses, names it, and --force says
    // what broke.
    refused(&home, &["delete", "vi/golden"], "vd/thin");
    refused(&home, &["delete", "vd/golden"], "is an image");
    refused(&home, &["delete", "vd/nothing"], "no vd/nothing");
    home.ok(&["delete", "vd/thin", "-q"]);
    home.ok(&["delete", "vi/golden", "-q"]);
    assert_eq!(pool_state(&home).2, "");
    home.ok(&["create", "vi/golden", "--from", "vd/full", "-q"]);
    home.ok(&["create", "vd/thin", "--from", "vi/golden", "--thin", "-q"]);
    let out = home.ok(&["delete", "vi/golden", "--force"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("vd/thin can no longer be read"));
}

#[test]
fn bad_sources_are_refused_and_leave_the_pool_as_it_was() {
    let (home, _) = exported();
    let raw = home.out("src.raw");
    let q2 = home.out("src.q2");
    let zst = home.out("src.zst");

    // Truncated qcow2: the header promises tables the file does not hold.
    let cut = home.out("cut.qcow2");
    copy_with(&q2, &cut, |f, len| f.set_len(len / 2).unwrap());
    refused(
        &home,
        &["upload", p(&cut), "vd/x", "--no-sidecars"],
        "past the end of the file",
    );
    let tiny = home.out("tiny.qcow2");
    std::fs::write(&tiny, b"QFI\xfb\0\0\0\x03").unwrap();
    refused(&home, &["upload", p(&tiny), "vd/x"], "too short");
    // Bit-flipped tables: an L1 entry pointing far past the end of the file.
    let flipped = home.out("flipped.qcow2");
    copy_with(&q2, &flipped, |f, _| {
        let mut h = [0u8; 8];
        f.read_exact_at(&mut h, 40).unwrap();
        let l1 = u64::from_be_bytes(h);
        f.write_all_at(&((1u64 << 63) | (1 << 50)).to_be_bytes(), l1)
            .unwrap();
    });
    refused(
        &home,
        &["upload", p(&flipped), "vd/x", "--no-sidecars"],
        "past the end",
    );
    // A corrupt zstd frame: bytes flipped in the middle of the compressed data.
    let bad = home.out("bad.zst");
    copy_with(&zst, &bad, |f, len| {
        let mut b = vec![0u8; 64];
        f.read_exact_at(&mut b, len / 2).unwrap();
        for x in &mut b {
            *x = !*x;
        }
        f.write_all_at(&b, len / 2).unwrap();
    });
    // Either the decoder notices, or the content digest beside it does.
    let before = pool_state(&home);
    let line = home.fails(&["upload", p(&bad), "vd/x"]);
    assert!(
        line.contains("zstd") || line.contains("digest mismatch"),
        "{line}"
    );
    assert_eq!(pool_state(&home), before);
    // A truncated zstd stream.
    let short = home.out("short.zst");
    copy_with(&zst, &short, |f, len| f.set_len(len - len / 3).unwrap());
    refused(
        &home,
        &["upload", p(&short), "vd/x", "--no-sidecars"],
        "cut short",
    );
    // Wrong digests, from the command line and from a sidecar.
    refused(
        &home,
        &["upload", p(&raw), "vd/x", "--sha256", &"ab".repeat(32)],
        "SHA-256 mismatch",
    );
    let mut digest = sidecar_digest(&raw);
    let last = if digest.ends_with('0') { '1' } else { '0' };
    digest.pop();
    digest.push(last);
    refused(
        &home,
        &["upload", p(&q2), "vd/x", "--digest", &digest],
        "content digest mismatch",
    );
    std::fs::write(home.out("src.raw.digest"), format!("{digest}  src.raw\n")).unwrap();
    refused(
        &home,
        &["upload", p(&raw), "vd/x"],
        "content digest mismatch",
    );
    // Oversize: a source larger than the size asked for.
    refused(
        &home,
        &["upload", p(&raw), "vd/x", "--size", "8M", "--no-sidecars"],
        "larger --size",
    );
    refused(
        &home,
        &["upload", p(&zst), "vd/x", "--size", "8M", "--no-sidecars"],
        "larger --size",
    );
    // An existing name, a snapshot address, formats snapport does not take.
    refused(
        &home,
        &["upload", p(&raw), "vd/src", "--no-sidecars"],
        "exists already",
    );
    refused(
        &home,
        &["upload", p(&raw), "vds/src@x"],
        "snapshots are taken",
    );
    let vmdk = home.out("x.vmdk");
    std::fs::write(&vmdk, b"KDMV\x01\0\0\0").unwrap();
    refused(&home, &["upload", p(&vmdk), "vd/x"], "VMDK");
    refused(
        &home,
        &["upload", p(&home.out("missing.raw")), "vd/x"],
        "missing.raw",
    );
    // A size that does not parse is a usage error (exit 2); the pool stays as it was.
    let before = pool_state(&home);
    let line = home.usage_fails(&["upload", p(&raw), "vd/x", "--size", "12Q"]);
    assert!(line.contains("unit"), "{line}");
    assert_eq!(pool_state(&home), before, "the pool changed after: {line}");
    // A zstd-compressed qcow2 would otherwise import as raw bytes.
    let qz = home.out("q2.zst");
    tool("zstd", &["-q", "-f", p(&q2), "-o", p(&qz)]);
    refused(
        &home,
        &["upload", p(&qz), "vd/x", "--size", "24M"],
        "zstd-compressed qcow2",
    );
    // --format overrides detection, but a qcow2 must be one.
    refused(
        &home,
        &["upload", p(&raw), "vd/x", "--format", "qcow2"],
        "is not qcow2",
    );
    refused(
        &home,
        &[
            "upload",
            p(&raw),
            "vd/x",
            "--format",
            "raw.zst",
            "--no-sidecars",
            "--size",
            "24M",
        ],
        "zstd",
    );
}

#[test]
fn a_short_stream_fails_when_its_size_was_declared() {
    let (home, _) = exported();
    // snapport's raw.zst declares 24 MiB; a stream of fewer decompressed bytes is cut.
    let whole = std::fs::read(home.out("src.zst")).unwrap();
    let raw = std::fs::read(home.out("src.raw")).unwrap();
    let mut short = Vec::new();
    short.extend_from_slice(&whole[..24]); // the size frame
    let mut enc = zstd::stream::write::Encoder::new(&mut short, 1).unwrap();
    enc.write_all(&raw[..10 << 20]).unwrap();
    enc.finish().unwrap();
    let path = home.out("short2.zst");
    std::fs::write(&path, &short).unwrap();
    refused(
        &home,
        &["upload", p(&path), "vd/x"],
        "ended after 10485760 of the 25165824 bytes",
    );
}

/// A tmpfs of `mib` MiB mounted at `dir`, unmounted on drop; None (with the reason
/// printed) where mounting is not possible.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m"),
                "tmpfs",
                p(dir),
            ])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs to fill up (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_file_system_fails_cleanly() {
    let home = Home::new();
    let dir = home.path().join("small");
    let Some(_fs) = Tmpfs::mount(&dir, 8) else {
        return;
    };
    home.write_config(&format!(
        "[pools.small]\nplugin = \"qcow2\"\nfolders = [\"{}\"]\nwritable = true\n",
        dir.display()
    ));
    let src = home.out("random.raw");
    tool(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", p(&src)),
            "bs=1M",
            "count=16",
            "status=none",
        ],
    );
    let line = home.fails(&["upload", p(&src), "vd/x", "-n", "small"]);
    assert!(line.contains("no space left"), "{line}");
    assert_eq!(
        files_in(&dir),
        Vec::<String>::new(),
        "ENOSPC left files behind"
    );
    // The same pool takes what fits.
    tool("truncate", &["-s", "4M", p(&src)]);
    home.ok(&["upload", p(&src), "vd/x", "-n", "small", "-q"]);
    tool(
        "qemu-img",
        &["compare", "-F", "raw", p(&dir.join("x.qcow2")), p(&src)],
    );
}

/// Starts `snapport upload - vd/NAME --size 1G` reading from a pipe we hold open, and
/// waits until its hidden temporary volume exists.
fn stalled_upload(home: &Home, name: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["upload", "-", &format!("vd/{name}"), "--size", "1G", "-q"])
        .env("SNAPPORT_HOME", home.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let stdin = child.stdin.as_mut().unwrap();
    for _ in 0..8 {
        stdin.write_all(&chunk).unwrap();
    }
    let started = Instant::now();
    let hidden = |h: &Home| {
        files_in(&h.pool())
            .iter()
            .any(|f| f.starts_with(&format!(".{name}.qcow2.snapport-")))
    };
    while !hidden(home) && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        hidden(home),
        "the upload never created its volume: {:?}",
        files_in(&home.pool())
    );
    child
}

#[test]
fn kill_9_leaves_no_listed_disk_and_the_name_stays_usable() {
    let (home, img) = exported();
    let before = pool_state(&home);
    let mut child = stalled_upload(&home, "k");
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    let after = pool_state(&home);
    assert_eq!(
        (after.1, after.2),
        (before.1.clone(), before.2.clone()),
        "a killed upload is listed"
    );
    assert!(
        files_in(&home.pool())
            .iter()
            .any(|f| f.starts_with(".k.qcow2.snapport-")),
        "SIGKILL runs no handler: its staged file is still there, hidden"
    );
    // The leftover is hidden; the next upload (of any name) sweeps it, and the name is
    // free to use.
    home.ok(&["upload", p(&home.out("src.raw")), "vd/other", "-q"]);
    let hidden: Vec<String> = files_in(&home.pool())
        .into_iter()
        .filter(|f| f.starts_with('.'))
        .collect();
    assert_eq!(
        hidden,
        Vec::<String>::new(),
        "the dead upload's file was not swept"
    );
    home.ok(&["upload", p(&home.out("src.raw")), "vd/k", "-q"]);
    tool(
        "qemu-img",
        &["compare", p(&img), p(&home.pool().join("k.qcow2"))],
    );
    let hidden: Vec<String> = files_in(&home.pool())
        .into_iter()
        .filter(|f| f.starts_with('.'))
        .collect();
    assert_eq!(hidden, Vec::<String>::new(), "an upload left a hidden file");

    // SIGTERM and SIGINT: the handler removes the temporary volume itself.
    for signal in ["TERM", "INT"] {
        let mut child = stalled_upload(&home, "t");
        tool("kill", &[&format!("-{signal}"), &child.id().to_string()]);
        let status = child.wait().unwrap();
        assert!(!status.success());
        let hidden: Vec<String> = files_in(&home.pool())
            .into_iter()
            .filter(|f| f.starts_with('.'))
            .collect();
        assert_eq!(
            hidden,
            Vec::<String>::new(),
            "SIG{signal} left a temporary volume"
        );
    }
}

#[test]
fn zeros_inside_allocated_data_are_never_written() {
    let home = Home::new();
    // 8 MiB, every byte allocated: leaves of data, of zeros, and leaves whose first
    // 8 KiB are zeros with data after them (the probe must read on), then a short tail.
    let src = home.out("dense.raw");
    let script = r#"
import sys
L = 64 << 10
leaf = lambda kind: bytes(L) if kind == 'z' else (bytes(8192) + b'\x5a' * (L - 8192) if kind == 'h' else b'\xa5' * L)
plan = 'dzhzzdhz' * 16
with open(sys.argv[1], 'wb') as f:
    for k in plan:
        f.write(leaf(k))
    f.write(b'\x01' * 1000 + bytes(24))
"#;
    tool("python3", &["-c", script, p(&src)]);
    assert!(
        allocated(&src) >= 8 << 20,
        "the source must be fully allocated"
    );
    let digest = python_content_digest(&src);
    // Without a digest, leaves are probed; with one, every byte is read and hashed.
    home.ok(&["upload", p(&src), "vd/probed", "-q"]);
    home.ok(&["upload", p(&src), "vd/hashed", "-q", "--digest", &digest]);
    let data_leaves = 16 * 4 + 1; // d, h, d, h per 8 leaves, and the tail
    for name in ["probed", "hashed"] {
        let img = home.pool().join(format!("{name}.qcow2"));
        tool("qemu-img", &["check", p(&img)]);
        tool("qemu-img", &["compare", "-F", "raw", p(&img), p(&src)]);
        let limit = data_leaves * (64 << 10) + 6 * (64 << 10);
        assert!(
            allocated(&img) <= limit,
            "{name}: {} allocated, limit {limit}",
            allocated(&img)
        );
        let mapped = mapped_data_as(&img, None);
        // The 1024-byte tail leaf: 1000 bytes of data, then zeros in the same sector.
        assert_eq!(
            mapped,
            16 * 4 * (64 << 10) + 1024,
            "{name}: zero leaves must stay unallocated"
        );
    }
}

#[test]
fn qcow2_files_with_compressed_clusters_and_backing_chains() {
    let home = Home::new();
    let dir = home.out("x").parent().unwrap().to_path_buf();
    // A raw base, a qcow2 over it, a compressed (zstd) top over that: the chain as files.
    let base = dir.join("base.raw");
    tool("qemu-img", &["create", "-q", "-f", "raw", p(&base), "32M"]);
    qemu_io(
        &base,
        "raw",
        &["write -P 0x11 0 8m", "write -P 0x12 30m 2m"],
    );
    let mid = dir.join("mid.qcow2");
    qcow2_overlay(&mid, "base.raw", "raw", "32M", None);
    qemu_io(&mid, "qcow2", &["write -P 0x21 4m 4m", "write -z 30m 1m"]);
    let plain = dir.join("plain.raw");
    tool(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", p(&plain)),
            "bs=1M",
            "count=6",
            "status=none",
        ],
    );
    for ctype in ["zlib", "zstd"] {
        let top = dir.join(format!("top-{ctype}.qcow2"));
        // Compressible and incompressible clusters, compressed where it helps.
        let src = dir.join(format!("src-{ctype}.raw"));
        tool("qemu-img", &["create", "-q", "-f", "raw", p(&src), "32M"]);
        qemu_io(&src, "raw", &["write -P 0x31 12m 2m"]);
        tool(
            "dd",
            &[
                &format!("if={}", p(&plain)),
                &format!("of={}", p(&src)),
                "bs=1M",
                "seek=20",
                "conv=notrunc",
                "status=none",
            ],
        );
        let packed = dir.join(format!("packed-{ctype}.qcow2"));
        tool(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &format!("compression_type={ctype}"),
                p(&src),
                p(&packed),
            ],
        );
        // Rebase the compressed image onto mid (unsafe: only the pointer changes), so its
        // unallocated ranges read through the chain.
        tool(
            "qemu-img",
            &["rebase", "-u", "-b", "mid.qcow2", "-F", "qcow2", p(&packed)],
        );
        std::fs::rename(&packed, &top).unwrap();
        let name = format!("t{ctype}");
        home.ok(&["upload", p(&top), &format!("vd/{name}"), "-q"]);
        let new = home.pool().join(format!("{name}.qcow2"));
        tool("qemu-img", &["check", p(&new)]);
        tool("qemu-img", &["compare", p(&top), p(&new)]);
        let info = tool("qemu-img", &["info", "--output=json", p(&new)]);
        assert!(
            !info.contains("backing-filename"),
            "the upload is whole, not a chain: {info}"
        );
    }
    // A backing file outside the source's folder is not granted: clear refusal.
    let elsewhere = home.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let stray = elsewhere.join("stray.qcow2");
    qcow2_overlay(&stray, p(&base), "raw", "32M", None);
    let line = home.fails(&["upload", p(&stray), "vd/stray"]);
    assert!(line.contains("outside the folders"), "{line}");
}

/// `snapport ARGS` with `input`'s bytes on stdin through a pipe, whose length nobody
/// knows (as `cat FILE | snapport ...`).
fn piped(home: &Home, input: &Path, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(args)
        .env("SNAPPORT_HOME", home.path())
        .env_remove("SNAPPORT_PLUGIN_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let bytes = std::fs::read(input).unwrap();
    // The reader may stop early (a refusal): a broken pipe is its answer, not ours.
    let feeder = std::thread::spawn(move || drop(stdin.write_all(&bytes)));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

/// The one `snapport: error:` line of a run that must have failed with exit 1.
fn error_line(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "should fail with 1: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(lines[0].starts_with("snapport: error: "), "{stderr}");
    lines[0].to_string()
}

/// `n` bytes that are neither zeros nor repeating within a leaf.
fn pattern(n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A folder pool of raw files, `r`, beside the default qcow2 pool; its folder.
fn with_raw_pool(home: &Home) -> PathBuf {
    let dir = home.path().join("rawpool");
    std::fs::create_dir_all(&dir).unwrap();
    home.write_config(&format!(
        "[pools.r]\nplugin = \"raw\"\nfolders = [\"{}\"]\nwritable = true\n",
        dir.display()
    ));
    dir
}

fn sha256_hex(path: &Path) -> String {
    tool("sha256sum", &[p(path)])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_volume_holds_exactly_the_verified_bytes_or_is_refused() {
    let home = Home::new();
    let raw_dir = with_raw_pool(&home);
    // 1 MiB + 7 bytes: no whole number of 512-byte sectors.
    let odd = home.out("odd.raw");
    std::fs::write(&odd, pattern((1 << 20) + 7)).unwrap();
    let sha = sha256_hex(&odd);
    let digest = python_content_digest(&odd);
    let granularity =
        "the source is 1048583 bytes; pool default stores volumes in multiples of 512 bytes";

    // The qcow2 pool cannot hold that size: refused before anything is written, from a
    // file and from a pipe.
    refused(
        &home,
        &["upload", p(&odd), "vd/odd", "--sha256", &sha],
        granularity,
    );
    let before = pool_state(&home);
    let line = error_line(&piped(
        &home,
        &odd,
        &["upload", "-", "vd/odd", "--sha256", &sha],
    ));
    assert!(line.contains(granularity), "{line}");
    assert_eq!(pool_state(&home), before);
    refused(
        &home,
        &["upload", p(&odd), "vd/odd", "--size", "1048583"],
        granularity,
    );

    // A raw pool holds any size: exactly the source, verified.
    let out = home.ok(&[
        "upload",
        p(&odd),
        "vd/odd",
        "-n",
        "r",
        "--sha256",
        &sha,
        "-o",
        "json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["verified"][0], "sha256 from --sha256", "{doc}");
    let made = raw_dir.join("odd.raw");
    assert_eq!(std::fs::metadata(&made).unwrap().len(), (1 << 20) + 7);
    tool("cmp", &[p(&odd), p(&made)]);
    let listed = home.ok(&["get", "vd", "odd", "-n", "r", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["size"], (1 << 20) + 7, "{listed}");

    // From a pipe without --size: the size is what arrived, both digests checked.
    let out = piped(
        &home,
        &odd,
        &[
            "upload", "-", "vd/piped", "-n", "r", "--sha256", &sha, "--digest", &digest, "-o",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["verified"].as_array().unwrap().len(), 2, "{doc}");
    tool("cmp", &[p(&odd), p(&raw_dir.join("piped.raw"))]);
    // A wrong SHA-256 from a pipe: nothing in the pool folder, not even the spooled bytes.
    let before = files_in(&raw_dir);
    let line = error_line(&piped(
        &home,
        &odd,
        &[
            "upload",
            "-",
            "vd/wrong",
            "-n",
            "r",
            "--sha256",
            &"ab".repeat(32),
        ],
    ));
    assert!(line.contains("SHA-256 mismatch"), "{line}");
    assert_eq!(files_in(&raw_dir), before);

    // Into the qcow2 pool, a pipe of whole sectors works without --size, and so does a
    // file on stdin (its length is known).
    let whole = home.out("whole.raw");
    std::fs::write(&whole, pattern(3 << 20)).unwrap();
    let sha = sha256_hex(&whole);
    let out = piped(
        &home,
        &whole,
        &["upload", "-", "vd/p", "--sha256", &sha, "-q"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["upload", "-", "vd/f", "--sha256", &sha, "-q"])
        .env("SNAPPORT_HOME", home.path())
        .stdin(std::fs::File::open(&whole).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    // zstd's own stream carries no size snapport reads: it is stored first, too, and its
    // SHA-256 is of the compressed bytes as given.
    let zst = home.out("whole.raw.zst");
    tool("zstd", &["-q", "-f", p(&whole), "-o", p(&zst)]);
    let zsha = sha256_hex(&zst);
    let out = piped(
        &home,
        &zst,
        &["upload", "-", "vd/z", "--sha256", &zsha, "-q"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["p", "f", "z"] {
        let img = home.pool().join(format!("{name}.qcow2"));
        tool("qemu-img", &["compare", "-F", "raw", p(&img), p(&whole)]);
        let info = tool("qemu-img", &["info", "--output=json", p(&img)]);
        assert!(info.contains("\"virtual-size\": 3145728"), "{info}");
    }
    assert_eq!(pool_state(&home).1, "vd/f,vd/p,vd/z");
}

#[test]
fn endless_or_oversized_sources_fail_and_leave_nothing() {
    let home = Home::new();
    // Character devices may never end: without --size they are refused at once.
    for dev in ["/dev/zero", "/dev/urandom"] {
        refused(
            &home,
            &["upload", dev, "vd/z"],
            &format!("{dev} is a character device, which may never end: give --size"),
        );
    }
    let before = pool_state(&home);
    let out = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["upload", "-", "vd/z"])
        .env("SNAPPORT_HOME", home.path())
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .output()
        .unwrap();
    let line = error_line(&out);
    assert!(line.contains("stdin is a character device"), "{line}");
    assert_eq!(pool_state(&home), before);
    // With --size, a source that runs past it fails: a device, a pipe, a file.
    refused(
        &home,
        &["upload", "/dev/zero", "vd/z", "--size", "1M"],
        "larger than the target's 1048576 bytes",
    );
    let two = home.out("two.raw");
    std::fs::write(&two, pattern(2 << 20)).unwrap();
    let line = error_line(&piped(
        &home,
        &two,
        &["upload", "-", "vd/z", "--size", "1M"],
    ));
    assert!(
        line.contains("larger than the target's 1048576 bytes"),
        "{line}"
    );
    assert_eq!(pool_state(&home), before);
    refused(
        &home,
        &["upload", p(&two), "vd/z", "--size", "1M"],
        "more than --size 1048576",
    );
    // A pool that must know a volume's size before making it (an LVM pool) asks for it.
    let pv = home.out("pv.img");
    std::fs::write(&pv, vec![0u8; 1 << 20]).unwrap();
    home.write_config(&format!(
        "[pools.lvm]\nplugin = \"lvm\"\ndevices = {{ pv0 = \"{}\" }}\nwritable = true\n",
        pv.display()
    ));
    let line = error_line(&piped(&home, &two, &["upload", "-", "vd/z", "-n", "lvm"]));
    assert!(
        line.contains("pool lvm must know a new volume's size before it is made: give --size"),
        "{line}"
    );
    assert_eq!(pool_state(&home), before);
}

#[test]
fn qed_parallels_and_luks_images_are_named_and_refused() {
    let home = Home::new();
    let luks_opts = [
        "--object",
        "secret,id=s,data=x",
        "-o",
        "key-secret=s,iter-time=10",
    ];
    for (format, name, extra) in [
        ("qed", "a QED image", &[][..]),
        ("parallels", "a Parallels image", &[][..]),
        (
            "luks",
            "a LUKS-encrypted volume (LUKS version 1)",
            &luks_opts[..],
        ),
    ] {
        let img = home.out(&format!("x.{format}"));
        let mut args = vec!["create", "-q", "-f", format];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[p(&img), "16M"]);
        tool("qemu-img", &args);
        let expect = format!("{} is {name}", p(&img));
        refused(&home, &["upload", p(&img), "vd/x"], &expect);
        let before = pool_state(&home);
        let line = error_line(&piped(&home, &img, &["upload", "-", "vd/x"]));
        assert!(line.contains(&format!("stdin is {name}")), "{line}");
        assert_eq!(pool_state(&home), before);
    }
    // Told it is raw, the encrypted bytes are imported as they are.
    let luks = home.out("x.luks");
    home.ok(&["upload", p(&luks), "vd/enc", "--format", "raw", "-q"]);
    tool(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            p(&home.pool().join("enc.qcow2")),
            p(&luks),
        ],
    );
}

/// The same raw file (on ext4) imported into pools on ext4 and on tmpfs, where
/// `copy_file_range` from ext4 answers EXDEV and a chunk read to be hashed is written
/// from memory: the same disks (qemu-img compare against the source, cmp between the raw
/// pools), the same sparseness (zeros inside data never written), verified with the
/// content digest and without.
#[test]
fn imports_into_pools_on_tmpfs_and_ext4_are_identical() {
    if !shm_is_tmpfs() {
        return;
    }
    let ext4 = Home::new();
    let tmpfs = Home::new_in(Path::new("/dev/shm"));
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
    if dev(ext4.path()) == dev(tmpfs.path()) {
        eprintln!(
            "skip: the temporary folder {} is on /dev/shm's file system; the kernel copies within it, so the write-from-memory path cannot be told apart",
            ext4.path().display()
        );
        return;
    }
    // 24 MiB + 1 KiB (a qcow2 pool keeps multiples of 32 bytes): data, written zeros
    // inside data, a hole, data up to an odd end. Every byte depends on its offset, so a
    // byte written from the wrong place in a chunk (or a stale buffer) shows.
    let src = ext4.out("src.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len((24 << 20) + 1024).unwrap();
    let at = |offset: u64, len: usize| -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let mut x = (offset + i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                x ^= x >> 29;
                (x >> 40) as u8
            })
            .collect()
    };
    f.write_all_at(&at(0, 5 << 20), 0).unwrap();
    f.write_all_at(&vec![0u8; 2 << 20], 5 << 20).unwrap();
    f.write_all_at(&at(7 << 20, 3 << 20), 7 << 20).unwrap();
    f.write_all_at(&at(18 << 20, (6 << 20) + 1024), 18 << 20)
        .unwrap();
    drop(f);
    let digest = python_content_digest(&src);
    let data = (5 << 20) + (3 << 20) + (6 << 20) + 1024;
    let mut raw_disks = Vec::new();
    for home in [&ext4, &tmpfs] {
        let dir = with_raw_pool(home);
        for (name, verify) in [("plain", false), ("verified", true)] {
            for pool in ["default", "r"] {
                let mut args = vec!["upload", p(&src), "-q", "-n", pool];
                let address = format!("vd/{name}");
                args.push(&address);
                if verify {
                    args.extend(["--digest", &digest]);
                }
                home.ok(&args);
            }
            let qcow2 = home.pool().join(format!("{name}.qcow2"));
            tool("qemu-img", &["check", "-q", p(&qcow2)]);
            tool("qemu-img", &["compare", "-F", "raw", p(&qcow2), p(&src)]);
            // Zeros (written or holes) are never allocated: at most the data, in clusters.
            let mapped = mapped_data_as(&qcow2, None);
            assert!(
                mapped <= (data as u64).next_multiple_of(64 << 10),
                "{}: {mapped} bytes mapped for {data} of data",
                qcow2.display()
            );
            let raw = dir.join(format!("{name}.raw"));
            tool(
                "qemu-img",
                &["compare", "-f", "raw", "-F", "raw", p(&raw), p(&src)],
            );
            assert!(
                allocated(&raw) <= (data as u64).next_multiple_of(64 << 10),
                "{}: {} bytes allocated",
                raw.display(),
                allocated(&raw)
            );
            raw_disks.push(raw);
        }
    }
    for raw in &raw_disks[1..] {
        tool("cmp", &[p(&raw_disks[0]), p(raw)]);
    }
    // A wrong digest fails on tmpfs as on ext4, leaving no disk.
    let wrong = format!("{}0", &digest[..digest.len() - 1]);
    let wrong = if wrong == digest {
        format!("{}1", &digest[..digest.len() - 1])
    } else {
        wrong
    };
    let err = tmpfs.fails(&["upload", p(&src), "vd/wrong", "-q", "--digest", &wrong]);
    assert!(err.contains("digest"), "{err}");
    assert!(!tmpfs.pool().join("wrong.qcow2").exists());
}
