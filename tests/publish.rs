//! `download --publish` and `snapport fetch` end to end, on loopback: the printed curl
//! and fetch commands against a local `download` (`cmp`), resuming after either side is
//! killed, parallel streams, and the server's defences (tokens, paths, ranges, malformed
//! requests, 100 clients, slow-loris, TTL) checked with curl, raw sockets and headless
//! Chromium.

mod common;

use common::{p, tool, unpack_checked_bundle, Home};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A disk of `mib` MiB in the default pool: random data, a zero run and a hole, as
/// qcow2. Returns its local raw export (the oracle).
fn disk(home: &Home, name: &str, mib: u64) -> PathBuf {
    let raw = home.out(&format!("{name}.src"));
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(mib << 20).unwrap();
    drop(f);
    let data = (mib / 2).max(1);
    tool(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", p(&raw)),
            "bs=1M",
            &format!("count={data}"),
            "conv=notrunc",
            "status=none",
        ],
    );
    let img = home.pool().join(format!("{name}.qcow2"));
    tool(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            p(&raw),
            p(&img),
        ],
    );
    let local = home.out(&format!("{name}.local.raw"));
    home.ok(&["download", &format!("vd/{name}"), "-o", p(&local), "-q"]);
    tool("cmp", &[p(&raw), p(&local)]);
    local
}

/// A running `download --publish --json` and what it printed.
struct Publish {
    child: Child,
    info: Value,
    lines: BufReader<std::process::ChildStdout>,
}

impl Publish {
    fn start(home: &Home, args: &[&str]) -> Publish {
        let mut child = Command::new(env!("CARGO_BIN_EXE_snapport"))
            .args(["download", "--publish", "--json", "-q"])
            .args(args)
            .env("SNAPPORT_HOME", home.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the publish");
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        lines.read_line(&mut first).unwrap();
        if first.is_empty() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the publish printed nothing: {err}");
        }
        let info: Value = serde_json::from_str(&first).expect("the first line is JSON");
        Publish { child, info, lines }
    }

    fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap_or_default().to_string()
    }

    fn url(&self) -> String {
        self.s("url")
    }

    fn base(&self) -> String {
        let u = self.url();
        u[..u.rfind('/').unwrap()].to_string()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the server to stop by itself; returns its last JSON line.
    fn wait_stopped(mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the publish exited with {status}");
                let mut rest = String::new();
                self.lines.read_to_string(&mut rest).unwrap();
                let last = rest.lines().last().expect("a closing line");
                return serde_json::from_str(last).unwrap();
            }
            assert!(Instant::now() < deadline, "the publish did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Publish {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a printed command line with sh, in `dir`; returns (exit code, stdout, stderr).
fn sh(dir: &Path, line: &str) -> (i32, String, String) {
    let out = Command::new("sh")
        .args(["-c", line])
        .current_dir(dir)
        .env("PATH", path_with_snapport())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// PATH with the built binary first, so the printed `snapport fetch` runs it.
fn path_with_snapport() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_snapport")).parent().unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// curl with the publish's pin; returns (status, body).
fn curl(publish: &Publish, extra: &[&str], url: &str) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let mut args = vec![
        "-s".to_string(),
        "--path-as-is".into(),
        "-o".into(),
        p(&body).into(),
        "-w".into(),
        "%{http_code}".into(),
    ];
    if url.starts_with("https") {
        args.extend([
            "-k".into(),
            "--pinnedpubkey".into(),
            publish.s("pinned_pubkey"),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url.into());
    let out = Command::new("curl").args(&args).output().unwrap();
    let code: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, std::fs::read(&body).unwrap_or_default())
}

fn bearer(publish: &Publish) -> String {
    format!("Authorization: Bearer {}", publish.s("token"))
}

/// The `snapport fetch` line printed, writing to `out` instead, with extra options.
fn fetch_line(publish: &Publish, out: &Path, extra: &str) -> String {
    let line = publish.s("fetch");
    let cut = line.rfind(" -o ").unwrap();
    format!("{} -o {} {extra}", &line[..cut], p(out))
}

#[test]
fn printed_curl_and_fetch_commands_download_what_download_writes() {
    let home = Home::new();
    let local = disk(&home, "web", 40);
    let publish = Publish::start(&home, &["vd/web"]);
    assert!(
        publish.url().starts_with("https://127.0.0.1:"),
        "{}",
        publish.info
    );
    let curl_line = publish.s("curl");
    assert!(curl_line.contains("--pinnedpubkey sha256//") && curl_line.contains(" -k "));

    // curl, as printed (it writes web.raw in its folder).
    let dir = home.out("curl");
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, err) = sh(&dir, &curl_line);
    assert_eq!(code, 0, "{curl_line}: {err}");
    tool("cmp", &[p(&local), p(&dir.join("web.raw"))]);

    // fetch, as printed, then with 4 streams; each verified and identical.
    let dir = home.out("fetch");
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, err) = sh(&dir, &publish.s("fetch"));
    assert_eq!(code, 0, "{err}");
    tool("cmp", &[p(&local), p(&dir.join("web.raw"))]);
    let four = dir.join("four.raw");
    let (code, out, err) = sh(&dir, &fetch_line(&publish, &four, "--parallel 4 --json"));
    assert_eq!(code, 0, "{err}");
    tool("cmp", &[p(&local), p(&four)]);
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    // The digest fetch verified, group by group in the streams, is the content digest
    // Python computes from the local download.
    assert_eq!(
        summary["digest"].as_str().unwrap(),
        common::python_content_digest(&local)
    );
    // Zeros were not written: the fetched file is sparse like the export.
    assert!(common::allocated(&four) <= common::allocated(&local) + (1 << 20));
    assert!(!dir.join("four.raw.part").exists() && !dir.join("four.raw.part.state").exists());

    // The sidecar checks with sha256sum -c.
    let (code, body) = curl(
        &publish,
        &["-H", &bearer(&publish)],
        &format!("{}.sha256", publish.url()),
    );
    assert_eq!(code, 200);
    std::fs::write(dir.join("web.raw.sha256"), &body).unwrap();
    tool(
        "sh",
        &[
            "-c",
            &format!("cd {} && sha256sum -c web.raw.sha256", p(&dir)),
        ],
    );

    // HEAD: the size, ranges, the validator and the digest, no body.
    let out = tool(
        "curl",
        &[
            "-s",
            "-I",
            "-k",
            "--pinnedpubkey",
            &publish.s("pinned_pubkey"),
            "-H",
            &bearer(&publish),
            &publish.url(),
        ],
    )
    .to_lowercase();
    assert!(out.starts_with("http/1.1 200"), "{out}");
    let size = std::fs::metadata(&local).unwrap().len();
    assert!(out.contains(&format!("content-length: {size}")), "{out}");
    assert!(
        out.contains("accept-ranges: bytes") && out.contains("etag: \"raw-"),
        "{out}"
    );
    assert!(out.contains("repr-digest: sha-256=:"), "{out}");
    assert!(out.contains(", sha256-64k-4m=:"), "{out}");

    // A range is the same bytes as the file's slice.
    let all = std::fs::read(&local).unwrap();
    let (code, body) = curl(
        &publish,
        &["-H", &bearer(&publish), "-r", "1000-70999"],
        &publish.url(),
    );
    assert_eq!(code, 206);
    assert_eq!(body, all[1000..71000]);
    let (code, body) = curl(
        &publish,
        &["-H", &bearer(&publish), "-r", "-100"],
        &publish.url(),
    );
    assert_eq!((code, &body[..]), (206, &all[all.len() - 100..]));
}

#[test]
fn compressed_and_qcow2_publishes_are_the_local_exports() {
    let home = Home::new();
    let local = disk(&home, "z", 24);
    let dir = home.out("z");
    std::fs::create_dir_all(&dir).unwrap();
    for (format, file) in [("raw.zst", "z.raw.zst"), ("qcow2", "z.qcow2")] {
        let publish = Publish::start(&home, &["vd/z", "--format", format]);
        let got = dir.join(file);
        let (code, _, err) = sh(&dir, &fetch_line(&publish, &got, ""));
        assert_eq!(code, 0, "{err}");
        if format == "qcow2" {
            tool("qemu-img", &["check", p(&got)]);
            tool(
                "qemu-img",
                &["compare", "-f", "raw", "-F", "qcow2", p(&local), p(&got)],
            );
        } else {
            tool("zstd", &["-q", "-t", p(&got)]);
            let plain = dir.join("z.unpacked");
            tool("zstd", &["-q", "-d", "-f", p(&got), "-o", p(&plain)]);
            tool("cmp", &[p(&local), p(&plain)]);
        }
    }
    // The spool files were unlinked: nothing of the publish is left in the temp folder.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".snapport-publish-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn encrypted_publishes_serve_an_age_file_that_stock_age_decrypts() {
    let home = Home::new();
    let local = disk(&home, "e", 24);
    let key = home.path().join("key.txt");
    tool("age-keygen", &["-o", p(&key)]);
    let recipient = tool("age-keygen", &["-y", p(&key)]).trim().to_string();
    let dir = home.out("e");
    std::fs::create_dir_all(&dir).unwrap();
    for format in ["raw", "raw.zst"] {
        let publish = Publish::start(
            &home,
            &["vd/e", "--format", format, "--encrypt-to", &recipient],
        );
        let name = format!("e.{format}.age");
        assert!(publish.url().ends_with(&name), "{}", publish.url());
        // Fetched and verified as any publish (the digests are the encrypted bytes').
        let got = dir.join(&name);
        let (code, _, err) = sh(&dir, &fetch_line(&publish, &got, ""));
        assert_eq!(code, 0, "{err}");
        assert!(std::fs::read(&got)
            .unwrap()
            .starts_with(b"age-encryption.org/v1\n"));
        // Debian's age gives back the image a local export writes.
        let plain = dir.join(format!("e.{format}"));
        tool("age", &["-d", "-i", p(&key), "-o", p(&plain), p(&got)]);
        if format == "raw" {
            tool("cmp", &[p(&local), p(&plain)]);
        } else {
            let raw = dir.join("e.unpacked");
            tool("zstd", &["-q", "-d", "-f", p(&plain), "-o", p(&raw)]);
            tool("cmp", &[p(&local), p(&raw)]);
        }
        // And it uploads with the key.
        home.ok(&[
            "upload",
            p(&got),
            &format!("vd/back-{}", format.replace('.', "-")),
            "--identity",
            p(&key),
            "-q",
        ]);
    }
    // A VM bundle: served as an age file; age -d, tar and sha256sum -c read it.
    let cfg = home.out("vm.json");
    std::fs::write(&cfg, r#"{"name":"ev","disks":[{"name":"e"}]}"#).unwrap();
    home.ok(&["create", "vm/ev", "--config", p(&cfg), "-q"]);
    let publish = Publish::start(&home, &["vm/ev", "--encrypt-to", &recipient]);
    assert!(publish.url().ends_with("ev.tar.age"), "{}", publish.url());
    let got = dir.join("ev.tar.age");
    let (code, _, err) = sh(&dir, &fetch_line(&publish, &got, ""));
    assert_eq!(code, 0, "{err}");
    let tar = dir.join("ev.tar");
    tool("age", &["-d", "-i", p(&key), "-o", p(&tar), p(&got)]);
    unpack_checked_bundle(&tar, &dir.join("x"));
    // --publish serves instead of writing: an output beside it is refused, for a disk
    // and for a VM alike.
    for (address, what) in [("vd/e", "the export"), ("vm/ev", "the bundle")] {
        let e = home.usage_fails(&["download", address, "--publish", "-o", p(&dir.join("o"))]);
        assert!(e.contains(&format!("--publish serves {what}")), "{e}");
    }
}

/// Waits until `path` (a fetch state file) records at least `bytes` written.
fn wait_for_progress(path: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(b) = std::fs::read(path) {
            if let Ok(v) = serde_json::from_slice::<Value>(&b) {
                let done: u64 = v["done"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap())
                    .sum();
                if done >= bytes {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no progress in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_fetch(dir: &Path, line: &str) -> Child {
    Command::new("sh")
        .args(["-c", &format!("exec {line}")])
        .current_dir(dir)
        .env("PATH", path_with_snapport())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn fetch_resumes_after_the_client_or_the_server_is_killed() {
    let home = Home::new();
    let local = disk(&home, "big", 64);
    let dir = home.out("resume");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("big.raw");
    let state = dir.join("big.raw.part.state");

    // The client dies (SIGKILL) part-way; the next run asks only for the rest.
    let publish = Publish::start(&home, &["vd/big"]);
    let mut child = spawn_fetch(
        &dir,
        &fetch_line(&publish, &out, "--parallel 2 --limit-rate 8M"),
    );
    wait_for_progress(&state, 8 << 20);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists());
    let (code, stdout, err) = sh(&dir, &fetch_line(&publish, &out, "--parallel 3 --json"));
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(summary["resumed"].as_u64().unwrap() >= 8 << 20, "{summary}");
    assert!(
        summary["received"].as_u64().unwrap() < 64 << 20,
        "{summary}"
    );
    tool("cmp", &[p(&local), p(&out)]);
    drop(publish);

    // The server dies part-way: the client stops with a line saying how to resume; a new
    // publish of the same disk (new port, token and certificate) completes the download.
    std::fs::remove_file(&out).unwrap();
    let mut publish = Publish::start(&home, &["vd/big"]);
    let child = spawn_fetch(&dir, &fetch_line(&publish, &out, "--limit-rate 8M"));
    wait_for_progress(&state, 8 << 20);
    let _ = publish.child.kill();
    let _ = publish.child.wait();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("to resume"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out.exists());
    let again = Publish::start(&home, &["vd/big"]);
    assert_eq!(
        again.s("etag"),
        publish.s("etag"),
        "same disk, same validator"
    );
    let (code, stdout, err) = sh(&dir, &fetch_line(&again, &out, "--parallel 4 --json"));
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(summary["resumed"].as_u64().unwrap() >= 8 << 20, "{summary}");
    tool("cmp", &[p(&local), p(&out)]);
    assert!(!state.exists());

    // A partial file of other content is refused, not appended to.
    std::fs::remove_file(&out).unwrap();
    let child = spawn_fetch(&dir, &fetch_line(&again, &out, "--limit-rate 8M"));
    wait_for_progress(&state, 4 << 20);
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    drop(again);
    // The disk changes: its validator changes with it.
    common::qemu_io(
        &home.pool().join("big.qcow2"),
        "qcow2",
        &["write -P 7 0 64k"],
    );
    let changed = Publish::start(&home, &["vd/big"]);
    let (code, _, err) = sh(&dir, &fetch_line(&changed, &out, ""));
    assert_eq!(code, 1);
    assert!(
        err.contains("other content") && err.contains("remove it"),
        "{err}"
    );
    assert!(
        dir.join("big.raw.part").exists(),
        "the partial file is kept for the user"
    );
}

/// A server that sends an ETag but ignores Range (answers 200 with everything).
fn range_ignoring_server(dir: &Path) -> (Child, u16) {
    let script = r#"
import http.server, sys, os
class H(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self): self.send(False)
    def do_GET(self): self.send(True)
    def send(self, body):
        data = open(sys.argv[1], 'rb').read()
        if self.path.split('?')[0].endswith('.sha256'):
            import hashlib
            data = (hashlib.sha256(data).hexdigest() + '  x\n').encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.send_header('ETag', '"fixed"')
        self.send_header('Accept-Ranges', 'bytes')
        self.end_headers()
        if body:
            try:
                self.wfile.write(data)
            except Exception:
                pass
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, p(&dir.join("served"))])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().unwrap())
}

#[test]
fn fetch_refuses_to_resume_from_a_server_that_ignores_range() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(24u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("served"), &data).unwrap();
    let (mut server, port) = range_ignoring_server(dir.path());
    let out = dir.path().join("x.raw");
    let url = format!("http://127.0.0.1:{port}/x?token=whatever");
    let bin = env!("CARGO_BIN_EXE_snapport");
    // A fresh single stream needs no Range: it works (verified by reading the file back
    // for the SHA-256, the only digest this server offers).
    tool(
        bin,
        &["fetch", &url, "-o", p(&out), "-q", "--parallel", "1"],
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // Interrupted, it cannot resume: refused with a clear line, nothing appended.
    std::fs::remove_file(&out).unwrap();
    let mut child = Command::new(bin)
        .args([
            "fetch",
            &url,
            "-o",
            p(&out),
            "--limit-rate",
            "4M",
            "-q",
            "--parallel",
            "1",
        ])
        .spawn()
        .unwrap();
    wait_for_progress(&dir.path().join("x.raw.part.state"), 4 << 20);
    child.kill().unwrap();
    child.wait().unwrap();
    let o = Command::new(bin)
        .args(["fetch", &url, "-o", p(&out)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ignores Range") || err.contains("does not take Range"),
        "{err}"
    );
    assert!(!out.exists());
    let _ = server.kill();
    let _ = server.wait();
}

/// Sends `request` on a plain TCP connection; returns what came back before the server
/// closed it (or the deadline passed).
fn raw_request(addr: &str, request: &[u8]) -> String {
    String::from_utf8_lossy(&raw_bytes(addr, request).0).into_owned()
}

/// Sends `request` on a plain TCP connection; returns what came back, and whether the
/// server closed the connection (EOF) within 20 s.
fn raw_bytes(addr: &str, request: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let closed = s.read_to_end(&mut out).is_ok();
    (out, closed)
}

#[test]
fn tokens_paths_ranges_and_malformed_requests_get_the_right_answers() {
    let home = Home::new();
    let local = disk(&home, "sec", 8);
    let size = std::fs::metadata(&local).unwrap().len();
    let publish = Publish::start(&home, &["vd/sec"]);
    let token = publish.s("token");
    let url = publish.url();
    let base = publish.base();
    let all = std::fs::read(&local).unwrap();

    // Without the right token, in the right place, nothing: 401 and a short message.
    let mut wrong = token.clone().into_bytes();
    wrong[0] = if wrong[0] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    let refusals: Vec<(Vec<String>, String)> = vec![
        (vec![], url.clone()),
        (
            vec!["-H".into(), format!("Authorization: Bearer {wrong}")],
            url.clone(),
        ),
        (vec![], format!("{url}?token={wrong}")),
        (vec![], format!("{url}?token={}", &token[..32])),
        (vec![], format!("{base}/{token}/sec.raw")),
        (
            vec!["-H".into(), format!("Cookie: token={token}")],
            url.clone(),
        ),
        (vec!["-H".into(), format!("X-Token: {token}")], url.clone()),
        (vec!["-u".into(), format!("{token}:")], url.clone()),
        (
            vec!["-H".into(), format!("Authorization: {token}")],
            url.clone(),
        ),
        // A wrong header is not rescued by a right query.
        (
            vec!["-H".into(), format!("Authorization: Bearer {wrong}")],
            format!("{url}?token={token}"),
        ),
        (vec![], format!("{base}/?tok={token}")),
        (vec![], format!("{base}/status.json")),
        (vec![], format!("{url}.sha256")),
        (vec!["-X".into(), "DELETE".into()], url.clone()),
    ];
    for (extra, u) in &refusals {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (code, body) = curl(&publish, &extra, u);
        assert_eq!(code, 401, "{extra:?} {u}");
        assert!(body.len() < 200, "{extra:?} {u}: {} bytes", body.len());
    }
    let auth = bearer(&publish);
    let ok = |extra: &[&str], u: &str| {
        let mut e = vec!["-H", auth.as_str()];
        e.extend_from_slice(extra);
        curl(&publish, &e, u)
    };
    // The token in the query works (how the index page's links carry it).
    let (code, body) = curl(&publish, &[], &format!("{url}?token={token}"));
    assert_eq!((code, body.len() as u64), (200, size));

    // Paths: only the published names exist.
    for path in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/sec.raw/../../etc/passwd",
        "//etc/passwd",
        "/sec.raw/",
        "/SEC.RAW",
        "/.sha256",
        "/sec.raw%00",
        "/sec.raw.sha256.sha256",
    ] {
        let (code, body) = ok(&[], &format!("{base}{path}"));
        assert_eq!(code, 404, "{path}");
        assert!(body.len() < 200);
    }
    // Methods: read-only.
    for m in ["PUT", "POST", "DELETE", "PATCH"] {
        assert_eq!(ok(&["-X", m], &url).0, 405, "{m}");
    }

    // Ranges: beyond the end is 416 with the size; odd ones get the whole item.
    for r in [format!("{size}-"), format!("{}-{}", size + 10, size + 20)] {
        let out = tool(
            "curl",
            &[
                "-s",
                "-i",
                "-k",
                "--pinnedpubkey",
                &publish.s("pinned_pubkey"),
                "-H",
                &auth,
                "-r",
                &r,
                &url,
            ],
        );
        assert!(out.starts_with("HTTP/1.1 416"), "{r}: {out}");
        assert!(out
            .to_lowercase()
            .contains(&format!("content-range: bytes */{size}")));
    }
    for r in [
        "bytes=5-1",
        "bytes=abc",
        "bytes=0-1,5-9",
        "pages=1-2",
        "bytes=-",
    ] {
        let (code, body) = ok(&["-H", &format!("Range: {r}")], &url);
        assert_eq!((code, body.len() as u64), (200, size), "{r}");
    }
    // If-Range with another validator: the whole item, not a part of other bytes.
    let (code, body) = ok(&["-r", "0-9", "-H", "If-Range: \"other\""], &url);
    assert_eq!((code, body.len() as u64), (200, size));
    let (code, body) = ok(
        &[
            "-r",
            "10-19",
            "-H",
            &format!("If-Range: {}", publish.s("etag")),
        ],
        &url,
    );
    assert_eq!((code, &body[..]), (206, &all[10..20]));

    // Malformed requests on a plain-HTTP publish (raw sockets; TLS would hide them).
    let plain = Publish::start(&home, &["vd/sec", "--no-tls"]);
    let addr = plain.base().trim_start_matches("http://").to_string();
    let t = plain.s("token");
    for (request, expect) in [
        ("GARBAGE\r\n\r\n".to_string(), "HTTP/1.1 400"),
        ("GET /sec.raw HTTP/1.1\r\nno colon here\r\n\r\n".into(), "HTTP/1.1 400"),
        (format!("GET /sec.raw HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Length: -5\r\n\r\n"), "HTTP/1.1 400"),
        (format!("GET /sec.raw HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20)), "HTTP/1.1 431"),
        ("GET /sec.raw HTTP/1.1\r\nHost: x\r\n\r\n".into(), "HTTP/1.1 401"),
        (format!("GET /sec.raw HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nRange: bytes=0-3\r\nConnection: close\r\n\r\n"), "HTTP/1.1 206"),
    ] {
        let answer = raw_request(&addr, request.as_bytes());
        assert!(answer.starts_with(expect), "{request:.80}: {answer:.200}");
    }
    // A keep-alive request without the token: 401, and the server closes the connection
    // (EOF), with or without a second request behind it.
    for n in [1, 2] {
        let (answer, closed) = raw_bytes(
            &addr,
            "GET /sec.raw HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
                .repeat(n)
                .as_bytes(),
        );
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(closed, "the connection of a 401 was kept open: {answer}");
        assert!(answer.starts_with("http/1.1 401"), "{answer}");
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
        assert_eq!(answer.matches("http/1.1 ").count(), 1, "{answer}");
    }
    // Still serving after all that.
    let (code, body) = ok(&[], &url);
    assert_eq!((code, body), (200, all));
}

/// The server's peak resident memory, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_hundred_clients_and_slow_loris_leave_the_server_up_and_bounded() {
    let home = Home::new();
    let local = disk(&home, "many", 16);
    let size = std::fs::metadata(&local).unwrap().len();
    let publish = Publish::start(&home, &["vd/many"]);
    let auth = bearer(&publish);

    // 100 clients at once, each reading the whole disk slowly: 32 are served, the rest
    // are told 503 (try again); every served one gets every byte.
    let clients: Vec<Child> = (0..100)
        .map(|_| {
            Command::new("curl")
                .args([
                    "-s",
                    "-k",
                    "--pinnedpubkey",
                    &publish.s("pinned_pubkey"),
                    "-H",
                    &auth,
                    "--limit-rate",
                    "4M",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{size_download}",
                    &publish.url(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut served = 0;
    let mut busy = 0;
    for c in clients {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match text.split_once(' ') {
            Some(("200", n)) => {
                assert_eq!(n.parse::<u64>().unwrap(), size, "a short response");
                served += 1;
            }
            Some(("503", _)) => busy += 1,
            _ => panic!("unexpected answer {text:?}"),
        }
    }
    assert_eq!(served + busy, 100);
    assert!(served >= 32 && busy > 0, "served {served}, busy {busy}");
    let rss = peak_rss_kib(publish.pid());
    println!("peak memory of the server with 100 clients: {rss} KiB");
    assert!(rss < 400 << 10, "peak memory {rss} KiB with 100 clients");

    // Slow-loris: connections that send half a request, or never finish a TLS
    // handshake, are closed after the I/O deadline; meanwhile, and after, real clients
    // are served.
    drop(publish);
    let publish = Publish::start(&home, &["vd/many", "--io-timeout", "3s"]);
    let auth = bearer(&publish);
    let addr = publish.base().trim_start_matches("https://").to_string();
    let lorises: Vec<TcpStream> = (0..40)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).unwrap();
            if i % 2 == 0 {
                // The start of a TLS ClientHello, and nothing more.
                s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
            }
            s
        })
        .collect();
    let started = Instant::now();
    for mut s in lorises {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 64];
        let closed = matches!(s.read(&mut buf), Ok(0) | Err(_));
        assert!(closed, "a slow-loris connection was kept open");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    let (code, body) = curl(&publish, &["-H", &auth], &publish.url());
    assert_eq!((code, body.len() as u64), (200, size));

    // Over plain HTTP, headers trickled in stay unfinished: closed too.
    let plain = Publish::start(&home, &["vd/many", "--no-tls", "--io-timeout", "2s"]);
    let addr = plain.base().trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /many.raw HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut trickle_closed = false;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        if s.write_all(b"X-a: b\r\n").is_err() {
            trickle_closed = true;
            break;
        }
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        trickle_closed || answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[test]
fn the_ttl_counts_from_the_last_access_and_downloads_can_be_capped() {
    let home = Home::new();
    let local = disk(&home, "t", 4);
    let size = std::fs::metadata(&local).unwrap().len();

    // Accessed every second, a 3 s TTL keeps it alive; left alone, it stops and says so.
    let mut publish = Publish::start(&home, &["vd/t", "--ttl", "3s"]);
    let auth = bearer(&publish);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_secs(1));
        let (code, _) = curl(&publish, &["-H", &auth, "-I"], &publish.url());
        assert_eq!(code, 200);
    }
    assert!(publish.running(), "stopped while in use");
    let url = publish.url();
    let pin = publish.s("pinned_pubkey");
    let stopped = publish.wait_stopped(Duration::from_secs(20));
    assert_eq!(stopped["stopped"], "ttl", "{stopped}");
    // Gone: nothing answers any more.
    let out = Command::new("curl")
        .args([
            "-s",
            "-k",
            "--pinnedpubkey",
            &pin,
            "-H",
            &auth,
            "-o",
            "/dev/null",
            &url,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Strangers do not keep it up: flooded with requests without the token (over plain
    // HTTP, each answered 401 and closed), a 3 s TTL still ends it.
    let publish = Publish::start(&home, &["vd/t", "--ttl", "3s", "--no-tls"]);
    let addr = publish.base().trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = 0;
    while let Ok(mut s) = TcpStream::connect(&addr) {
        assert!(Instant::now() < deadline, "strangers kept the publish up");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(b"GET /t.raw HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = Vec::new();
        if s.read_to_end(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 401") {
            refused += 1;
        }
    }
    assert!(refused > 0);
    let stopped = publish.wait_stopped(Duration::from_secs(20));
    assert_eq!(stopped["stopped"], "ttl", "{stopped}");

    // --max-downloads 1: a complete download ends the publish; probes of a few bytes,
    // even of the last ones, are not downloads.
    let publish = Publish::start(&home, &["vd/t", "--max-downloads", "1"]);
    let auth = bearer(&publish);
    let all = std::fs::read(&local).unwrap();
    for (range, bytes) in [
        ("0-0", &all[..1]),
        ("0-1023", &all[..1024]),
        ("-1", &all[all.len() - 1..]),
        ("-1024", &all[all.len() - 1024..]),
        ("0-99", &all[..100]),
    ] {
        let (code, body) = curl(&publish, &["-H", &auth, "-r", range], &publish.url());
        assert_eq!((code, &body[..]), (206, bytes), "{range}");
    }
    let dir = home.out("capped");
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, err) = sh(&dir, &publish.s("curl"));
    assert_eq!(code, 0, "{err}");
    tool("cmp", &[p(&local), p(&dir.join("t.raw"))]);
    let stopped = publish.wait_stopped(Duration::from_secs(20));
    assert_eq!(stopped["stopped"], "downloads", "{stopped}");
    assert_eq!(stopped["downloads"], 1);

    // --max-downloads 2: a transfer in two halves (as a resumed one) counts once, when
    // it completes the file; a whole one then makes two.
    let publish = Publish::start(&home, &["vd/t", "--max-downloads", "2"]);
    let auth = bearer(&publish);
    let half = size / 2;
    let (code, first) = curl(
        &publish,
        &["-H", &auth, "-r", &format!("0-{}", half - 1)],
        &publish.url(),
    );
    assert_eq!(code, 206);
    let (code, rest) = curl(
        &publish,
        &["-H", &auth, "-r", &format!("{half}-")],
        &publish.url(),
    );
    assert_eq!(code, 206);
    assert_eq!([first, rest].concat(), all);
    let (code, _, err) = sh(&dir, &publish.s("curl"));
    assert_eq!(
        code, 0,
        "the halves counted as more than one download: {err}"
    );
    tool("cmp", &[p(&local), p(&dir.join("t.raw"))]);
    let stopped = publish.wait_stopped(Duration::from_secs(20));
    assert_eq!(stopped["stopped"], "downloads", "{stopped}");
    assert_eq!(stopped["downloads"], 2);
}

#[test]
fn http_1_0_and_clients_without_alpn_are_served_over_tls_and_plain_http() {
    let home = Home::new();
    let local = disk(&home, "old", 4);
    let all = std::fs::read(&local).unwrap();
    let publish = Publish::start(&home, &["vd/old"]);
    let auth = bearer(&publish);
    for extra in [
        &["-0"][..],
        &["--no-alpn"],
        &["-0", "--no-alpn"],
        &["--http1.1"],
    ] {
        let mut args = vec!["-H", auth.as_str()];
        args.extend_from_slice(extra);
        let (code, body) = curl(&publish, &args, &publish.url());
        assert_eq!(code, 200, "{extra:?}");
        assert!(body == all, "{extra:?}: other bytes");
        let (code, body) = curl(
            &publish,
            &[&args[..], &["-r", "10-19"]].concat(),
            &publish.url(),
        );
        assert_eq!((code, &body[..]), (206, &all[10..20]), "{extra:?}");
    }
    // The printed curl command with -0 writes the same file.
    let dir = home.out("old");
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, err) = sh(&dir, &publish.s("curl").replacen("curl ", "curl -0 ", 1));
    assert_eq!(code, 0, "{err}");
    tool("cmp", &[p(&local), p(&dir.join("old.raw"))]);

    // Plain HTTP/1.0 on a raw socket: answered in 1.0, the whole item, then closed.
    let plain = Publish::start(&home, &["vd/old", "--no-tls"]);
    let addr = plain.base().trim_start_matches("http://").to_string();
    let (answer, closed) = raw_bytes(
        &addr,
        format!(
            "GET /old.raw HTTP/1.0\r\nAuthorization: Bearer {}\r\n\r\n",
            plain.s("token")
        )
        .as_bytes(),
    );
    assert!(answer.starts_with(b"HTTP/1.0 200 OK\r\n") && closed);
    let body_at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(answer[body_at..] == all[..], "other bytes over HTTP/1.0");
}

#[test]
fn the_index_page_lists_the_export_in_headless_chromium_with_the_token_only() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        panic!("headless Chromium is needed for this test: apt-get install chromium");
    };
    let home = Home::new();
    disk(&home, "page", 4);
    let publish = Publish::start(&home, &["vd/page"]);
    let spki = publish
        .s("pinned_pubkey")
        .trim_start_matches("sha256//")
        .to_string();
    let profile = tempfile::tempdir().unwrap();
    let dump = |url: &str| -> String {
        let out = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                &format!("--user-data-dir={}", p(profile.path())),
                // Trust exactly the publish's key, as curl's --pinnedpubkey does.
                &format!("--ignore-certificate-errors-spki-list={spki}"),
                "--dump-dom",
                url,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let page = dump(&publish.s("index"));
    assert!(page.contains("snapport publish"), "{page}");
    assert!(page.contains(">page.raw</a>"), "{page}");
    assert!(page.contains("4.0 MiB"), "{page}");
    assert!(page.contains(&format!("href=\"/page.raw?token={}\"", publish.s("token"))));
    let refused = dump(&format!("{}/", publish.base()));
    assert!(refused.contains("a valid token is required"), "{refused}");
    assert!(!refused.contains("page.raw"), "{refused}");
}

/// A running `upload --publish -o json` and what it printed.
struct Receiving {
    child: Child,
    info: Value,
    /// Kept open: the server prints its summary at the end.
    _lines: BufReader<std::process::ChildStdout>,
}

impl Receiving {
    fn start(home: &Home, args: &[&str]) -> Receiving {
        let mut child = Command::new(env!("CARGO_BIN_EXE_snapport"))
            .args(["upload", "--publish", "-o", "json", "-q"])
            .args(args)
            .env("SNAPPORT_HOME", home.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        let info = serde_json::from_str(&line).expect("the first line is JSON");
        Receiving {
            child,
            info,
            _lines: lines,
        }
    }

    fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap_or_default().to_string()
    }

    /// `snapport push` as printed, for `file`, with extra options.
    fn push_line(&self, file: &Path, extra: &str) -> String {
        format!(
            "{} {extra}",
            self.s("push").replace(" FILE ", &format!(" {} ", p(file)))
        )
    }

    /// The server's Upload-Offset, asked with curl.
    fn offset(&self) -> u64 {
        let out = tool(
            "curl",
            &[
                "-s",
                "-I",
                "-k",
                "--pinnedpubkey",
                &self.s("pinned_pubkey"),
                "-H",
                &format!("Authorization: Bearer {}", self.s("token")),
                &self.s("url"),
            ],
        );
        out.lines()
            .find_map(|l| {
                l.to_lowercase()
                    .strip_prefix("upload-offset:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Waits for the server to end; returns its exit code and stderr.
    fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status.code().unwrap_or(-1), err);
            }
            assert!(Instant::now() < deadline, "the upload server did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file in the pool folder, hidden ones included.
fn pool_files(home: &Home) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(home.pool())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_push_killed_mid_way_resumes_and_bad_pushes_leave_no_disk() {
    let home = Home::new();
    let src = home.out("src.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(48 << 20).unwrap();
    drop(f);
    tool(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", p(&src)),
            "bs=1M",
            "count=40",
            "conv=notrunc",
            "status=none",
        ],
    );
    let dir = home.out("push");
    std::fs::create_dir_all(&dir).unwrap();

    // Killed part-way, pushed again: the server keeps what it had, the disk is whole.
    let receiving = Receiving::start(&home, &["vd/pushed"]);
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!("exec {}", receiving.push_line(&src, "--limit-rate 8M -q")),
        ])
        .env("PATH", path_with_snapport())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiving.offset() < 8 << 20 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let had = receiving.offset();
    assert!((8 << 20..48 << 20).contains(&had), "{had}");
    let (code, out, err) = sh(&dir, &receiving.push_line(&src, "--json"));
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["target"], "vd/pushed", "{summary}");
    assert_eq!(
        summary["verified"][0],
        "sha256 from the uploader's Upload-Sha256"
    );
    let (code, err) = receiving.wait();
    assert_eq!(code, 0, "{err}");
    let disk = home.pool().join("pushed.qcow2");
    tool("qemu-img", &["check", p(&disk)]);
    tool(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", p(&src), p(&disk)],
    );
    let before = pool_files(&home);

    // A wrong SHA-256: the pusher and the server both say so; no disk.
    let receiving = Receiving::start(&home, &["vd/wrong"]);
    let (code, _, err) = sh(
        &dir,
        &receiving.push_line(&src, &format!("--sha256 {}", "0".repeat(64))),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("SHA-256 mismatch") && err.contains("422"),
        "{err}"
    );
    let (code, err) = receiving.wait();
    assert_eq!(code, 1);
    assert!(err.contains("SHA-256 mismatch"), "{err}");
    assert_eq!(pool_files(&home), before);

    // A truncated upload (fewer bytes than declared, then nothing until the TTL): no disk.
    let receiving = Receiving::start(&home, &["vd/cut", "--ttl", "3s"]);
    let part = home.out("part.raw");
    std::fs::write(&part, &std::fs::read(&src).unwrap()[..4 << 20]).unwrap();
    let out = tool(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-k",
            "--pinnedpubkey",
            &receiving.s("pinned_pubkey"),
            "-H",
            &format!("Authorization: Bearer {}", receiving.s("token")),
            "-H",
            &format!("Upload-Length: {}", 48 << 20),
            "-H",
            &format!("Upload-Sha256: {}", "1".repeat(64)),
            "-T",
            p(&part),
            &receiving.s("url"),
        ],
    );
    assert_eq!(out, "204");
    let (code, err) = receiving.wait();
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(pool_files(&home), before);
    let listed = home.ok(&["get", "vd", "-o", "json"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("pushed") && !listed.contains("wrong") && !listed.contains("cut"));
}

/// Hostile clients of a TLS publish, all without the token, in one Python process: `idle`
/// connections that finish the handshake and send nothing, `partial` ones that send the
/// start of a ClientHello and nothing more, `keepalive` ones that each send one keep-alive
/// request (and are held, not closed, by this side), and `flooders` threads that send
/// requests on new connections as fast as they can. Prints `ready` once all of them are
/// open, then, when a line comes on stdin, stops the flood and prints what happened as
/// JSON. Each loop is bounded.
const HOSTILE_PY: &str = r#"
import json, socket, ssl, sys, threading, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
idle, partial, keepalive, flooders = (int(a) for a in sys.argv[4:8])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(['http/1.1'])
request = ('GET %s HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n' % path).encode()

def tls():
    s = ctx.wrap_socket(socket.create_connection((host, port), timeout=20))
    s.settimeout(20)
    return s

def read_all(s):
    """What came before the server closed the connection, and whether it did (EOF)."""
    got = b''
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            b = s.recv(65536)
        except socket.timeout:
            return got, False
        except (ConnectionError, ssl.SSLError):
            return got, True
        if not b:
            return got, True
        got += b
    return got, False

idles = [tls() for _ in range(idle)]
partials = []
for _ in range(partial):
    s = socket.create_connection((host, port), timeout=20)
    s.sendall(b'\x16\x03\x01\x02\x00')
    partials.append(s)
held = []
for _ in range(keepalive):
    s = tls()
    s.sendall(request)
    held.append(s)

stop = threading.Event()
flood = {'requests': 0, 'refused': 0, 'other': []}
lock = threading.Lock()
def flooder():
    for _ in range(20000):
        if stop.is_set():
            return
        try:
            s = tls()
            s.sendall(request + request)
            got, eof = read_all(s)
            s.close()
        except (OSError, ssl.SSLError) as e:
            got, eof = repr(e).encode(), False
        with lock:
            flood['requests'] += 1
            if got.startswith(b'HTTP/1.1 401') and got.count(b'HTTP/1.1') == 1 and eof:
                flood['refused'] += 1
            elif len(flood['other']) < 5:
                flood['other'].append(got[:200].decode('latin-1'))
threads = [threading.Thread(target=flooder) for _ in range(flooders)]
for t in threads:
    t.start()
print('ready', flush=True)
sys.stdin.readline()
stop.set()
for t in threads:
    t.join()

answers = [read_all(s) for s in held]
result = {
    'keepalive_401': sum(1 for got, _ in answers if got.startswith(b'HTTP/1.1 401')),
    'keepalive_close_header': sum(1 for got, _ in answers if b'\r\nconnection: close\r\n' in got.lower()),
    'keepalive_eof': sum(1 for _, eof in answers if eof),
    'idle_closed': sum(1 for s in idles if read_all(s)[1]),
    'partial_closed': sum(1 for s in partials if read_all(s)[1]),
    'flood': flood,
}
print(json.dumps(result), flush=True)
"#;

#[test]
fn strangers_idle_or_flooding_do_not_lock_out_the_token_holder() {
    let home = Home::new();
    let local = disk(&home, "lock", 16);
    let publish = Publish::start(&home, &["vd/lock"]);
    let addr = publish.base().trim_start_matches("https://").to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut hostile = Command::new("python3")
        .args([
            "-c",
            HOSTILE_PY,
            host,
            port,
            "/lock.raw",
            "40",
            "40",
            "100",
            "4",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(hostile.stdout.take().unwrap());
    let mut line = String::new();
    said.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    // With 180 strangers' connections open and 4 more flooding, more than `--max-clients`
    // (32): the token holder is served, every byte.
    let dir = home.out("holder");
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, err) = sh(&dir, &publish.s("curl"));
    assert_eq!(code, 0, "the token holder was not served: {err}");
    tool("cmp", &[p(&local), p(&dir.join("lock.raw"))]);

    hostile.stdin.take().unwrap().write_all(b"stop\n").unwrap();
    line.clear();
    said.read_line(&mut line).unwrap();
    assert!(hostile.wait().unwrap().success());
    let got: Value = serde_json::from_str(&line).unwrap();
    println!("strangers: {got}");
    // Every tokenless request got 401 and its connection closed by the server (EOF),
    // a second request sent on it unanswered; idle and half-handshaken connections were
    // closed at the greeting deadline.
    assert_eq!(got["keepalive_401"], 100, "{got}");
    assert_eq!(got["keepalive_close_header"], 100, "{got}");
    assert_eq!(got["keepalive_eof"], 100, "{got}");
    assert_eq!(got["idle_closed"], 40, "{got}");
    assert_eq!(got["partial_closed"], 40, "{got}");
    let flood = &got["flood"];
    assert!(flood["requests"].as_u64().unwrap() > 0, "{got}");
    assert_eq!(flood["refused"], flood["requests"], "{got}");
    // Strangers are not clients: the publish was used once, by the token holder.
    let (code, body) = curl(
        &publish,
        &["-H", &bearer(&publish)],
        &format!("{}/status.json", publish.base()),
    );
    assert_eq!(code, 200);
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["rejected"], 0, "{status}");
}

#[test]
fn an_upload_body_longer_than_announced_is_refused_as_such() {
    let home = Home::new();
    let src = home.out("long.raw");
    std::fs::write(&src, vec![7u8; 4 << 20]).unwrap();
    let before = pool_files(&home);
    let receiving = Receiving::start(&home, &["vd/long"]);
    let body = home.out("answer");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            p(&body),
            "-w",
            "%{http_code}",
            "-k",
            "--pinnedpubkey",
            &receiving.s("pinned_pubkey"),
            "-H",
            &format!("Authorization: Bearer {}", receiving.s("token")),
            "-H",
            "Upload-Length: 1000",
            "-H",
            &format!("Upload-Sha256: {}", "1".repeat(64)),
            "-T",
            p(&src),
            &receiving.s("url"),
        ])
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    let answer = std::fs::read_to_string(&body).unwrap_or_default();
    assert_eq!(code, "413", "{answer}");
    assert!(
        answer.contains("longer than its Upload-Length of 1000 bytes"),
        "{answer}"
    );
    // The server says the same, in one line, and imports nothing.
    let (code, err) = receiving.wait();
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("snapport: error: ")
            && err.contains("longer than its Upload-Length of 1000 bytes")
            && !err.contains("truncated"),
        "{err}"
    );
    assert_eq!(pool_files(&home), before);
}
