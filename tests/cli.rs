//! One convention on every command: `-o json` (or `--output-format json` where `-o` names
//! the output file) prints one JSON document on stdout; `-q` prints nothing on success;
//! an address or size that does not parse is a usage error (exit 2, one line); completion
//! scripts parse in their shell and man pages render with `man -l`.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A home with a qcow2 disk, a snapshot of it, an image, and a VM over a second disk.
fn lab() -> Home {
    let home = Home::new();
    let img = home.pool().join("disk.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "4M"]);
    qemu_io(&img, "qcow2", &["write -P 0x5a 0 256k"]);
    let root = home.pool().join("web-root.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&root), "2M"]);
    let cfg = home.out("web.json");
    std::fs::write(&cfg, r#"{"name":"web","disks":[{"name":"web-root"}]}"#).unwrap();
    home.ok(&["create", "vm/web", "--config", p(&cfg), "-q"]);
    home.ok(&["snapshot", "create", "vd/disk", "--name", "s1", "-q"]);
    home.ok(&["create", "vi/base", "--from", "vd/disk", "-q"]);
    home
}

/// The one JSON document `out` holds: nothing but whitespace around it.
fn one_document(args: &[&str], out: &[u8]) -> Value {
    let docs: Vec<Value> = serde_json::Deserializer::from_slice(out)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| {
            panic!(
                "snapport {args:?}: stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(out)
            )
        });
    assert_eq!(docs.len(), 1, "snapport {args:?}: {} documents", docs.len());
    docs.into_iter().next().unwrap()
}

/// Every command that reports, as it would be run with its JSON flag appended by `json`
/// (`-o json`, or `--output-format json` where `-o` is the file), and the file it makes.
fn reporting_commands(home: &Home, tag: &str) -> Vec<Vec<String>> {
    let out = |name: &str| p(&home.out(&format!("{tag}-{name}"))).to_string();
    let src = out("src.raw");
    // An image to upload, made by qemu-img, not by snapport.
    tool("qemu-img", &["create", "-q", "-f", "raw", &src, "1M"]);
    let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        o(&["get", "vd"]),
        o(&["get", "vi"]),
        o(&["get", "vds"]),
        o(&["get", "vm"]),
        o(&["describe", "vds/disk@s1"]),
        o(&["tree", "vd/disk"]),
        o(&[
            "snapshot",
            "create",
            "vd/disk",
            "--name",
            &format!("{tag}-s"),
        ]),
        o(&[
            "snapshot",
            "create",
            "vm/web",
            "--name",
            &format!("{tag}-v"),
        ]),
        o(&["snapshot", "gc"]),
        o(&["restore", "vd/disk", "--from", "vds/disk@s1"]),
        o(&["prune", "vd/disk", "--keep-last", "9"]),
        o(&["create", &format!("vd/{tag}-c"), "--from", "vd/disk"]),
        o(&["upload", &src, &format!("vd/{tag}-u")]),
        o(&["clone", "vm/web", "--to", &format!("vm/{tag}-w")]),
        o(&["delete", &format!("vd/{tag}-c")]),
        o(&["plugin", "list"]),
        o(&["plugin", "inspect", "qcow2"]),
        o(&["download", "vd/disk", "-o", &out("d.raw")]),
        o(&["download", "vm/web", "-o", &out("web.tar")]),
    ]
}

/// The flag that asks a command for JSON.
fn json_flag(args: &[String]) -> [&'static str; 2] {
    if args[0] == "download" || args[0] == "fetch" {
        ["--output-format", "json"]
    } else {
        ["-o", "json"]
    }
}

#[test]
fn every_reporting_command_prints_one_json_document() {
    let home = lab();
    for args in reporting_commands(&home, "j") {
        let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
        full.extend(json_flag(&args));
        let out = home.ok(&full);
        let doc = one_document(&full, &out.stdout);
        assert!(
            doc.is_object() || doc.is_array(),
            "snapport {full:?}: {doc}"
        );
    }
    // `--json` stays as an alias everywhere.
    for args in [
        &["get", "vd"][..],
        &["tree", "vd/disk"],
        &["plugin", "list"],
    ] {
        let mut full = args.to_vec();
        full.push("--json");
        let out = home.ok(&full);
        one_document(&full, &out.stdout);
    }
}

#[test]
fn every_command_is_silent_with_q() {
    let home = lab();
    for args in reporting_commands(&home, "q") {
        let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
        full.push("-q");
        let out = home.ok(&full);
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "snapport {full:?} printed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `snapport ARGS` must exit 2 with one `snapport: error:` line (or clap's usage text,
/// which starts with `error:`); returns stderr.
fn usage_error(home: &Home, args: &[&str]) -> String {
    let out = home.snapport(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "snapport {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.starts_with("snapport: error: ") && stderr.lines().count() == 1
            || stderr.starts_with("error: "),
        "snapport {args:?}: {stderr}"
    );
    assert!(out.stdout.is_empty(), "snapport {args:?} printed on stdout");
    stderr
}

#[test]
fn unparsable_addresses_and_sizes_are_usage_errors() {
    let home = lab();
    let out = p(&home.out("x.raw")).to_string();
    for args in [
        &["download", "disk", "-o", &out][..],
        &["download", "vds/disk", "-o", &out],
        &["download", "vd/", "-o", &out],
        &["download", "vms/web", "-o", &out],
        &["describe", "vd/disk@s1"],
        &["tree", "nope/disk"],
        &["snapshot", "create", "vds/x"],
        &["restore", "vd/disk", "--from", "s1"],
        &["delete", "vd/a/b"],
        &["create", "vd/new", "--from", "vd/disk", "--size", "12Q"],
        &["upload", "-", "vd/new", "--size", "lots"],
        &["get", "vd", "--no-such-flag"],
        &[
            "fetch",
            "https://127.0.0.1:1/x",
            "-o",
            &out,
            "--limit-rate",
            "fast",
        ],
    ] {
        let line = usage_error(&home, args);
        assert!(!line.is_empty());
    }
    // A well-formed address of nothing is a failure, not a usage error.
    let line = home.fails(&["download", "vd/nope", "-o", &out]);
    assert!(line.contains("nope"), "{line}");
}

#[test]
fn completion_scripts_parse_and_man_pages_render() {
    let home = Home::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = home.ok(&["completion", shell]);
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("snapport") && script.contains("download"),
            "{shell}: {script}"
        );
        if shell == "bash" {
            let file = home.out("snapport.bash");
            std::fs::write(&file, &script).unwrap();
            tool("bash", &["-n", p(&file)]);
        }
    }
    let dir = home.out("man");
    home.ok(&["man", p(&dir)]);
    let mut pages = files_in(&dir);
    pages.sort();
    for command in [
        "snapport.1",
        "snapport-download.1",
        "snapport-snapshot-create.1",
    ] {
        assert!(pages.iter().any(|p| p == command), "{pages:?}");
    }
    for page in &pages {
        let text = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(dir.join(page))
            .env("MANWIDTH", "80")
            .output()
            .expect("man -l");
        assert!(text.status.success(), "man -l {page}");
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}: {text}"
        );
    }
}

/// `download --publish` running in the background; its first JSON line, and its stdout
/// kept open (the server prints its closing line there).
fn publish(home: &Home, address: &str) -> (Child, Value, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["download", address, "--publish", "--json", "-q"])
        .env("SNAPPORT_HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    (
        child,
        serde_json::from_str(&line).expect("publish JSON"),
        lines,
    )
}

#[test]
fn fetch_and_push_report_as_json_and_keep_quiet() {
    let home = lab();
    let (mut server, info, _stdout) = publish(&home, "vd/disk");
    let url = format!(
        "{}?token={}",
        info["url"].as_str().unwrap(),
        info["token"].as_str().unwrap()
    );
    let fp = info["fingerprint"].as_str().unwrap().to_string();
    let file = home.out("fetched.raw");
    let args = [
        "fetch",
        &url,
        "--fingerprint",
        &fp,
        "-o",
        p(&file),
        "--output-format",
        "json",
    ];
    let out = home.ok(&args);
    let doc = one_document(&args, &out.stdout);
    assert!(doc.is_object(), "{doc}");
    let quiet = home.out("fetched-quietly.raw");
    let args = ["fetch", &url, "--fingerprint", &fp, "-o", p(&quiet), "-q"];
    let out = home.ok(&args);
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "fetch -q printed"
    );
    tool("cmp", &[p(&file), p(&quiet)]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(Path::new(&file).is_file());

    let mut receiver = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(["upload", "--publish", "vd/pushed", "-o", "json", "-q"])
        .env("SNAPPORT_HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut receiver_out = BufReader::new(receiver.stdout.take().unwrap());
    let mut line = String::new();
    receiver_out.read_line(&mut line).unwrap();
    let info: Value = serde_json::from_str(&line).unwrap();
    let url = format!(
        "{}?token={}",
        info["url"].as_str().unwrap(),
        info["token"].as_str().unwrap()
    );
    let fp = info["fingerprint"].as_str().unwrap().to_string();
    let args = ["push", p(&file), &url, "--fingerprint", &fp, "-q"];
    let out = home.ok(&args);
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "push -q printed"
    );
    let _ = receiver.wait();
    let exported = home.out("pushed.raw");
    home.ok(&["download", "vd/pushed", "-o", p(&exported), "-q"]);
    tool("cmp", &[p(&file), p(&exported)]);
}
