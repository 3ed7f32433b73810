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
    let line = home.usage_fails(&["download", "disk", "-o", p(&out)]);
    assert!(line.contains("not vd/NAME"), "{line}");
    let line = home.fails(&["download", "vd/nope", "-o", p(&out)]);
    assert!(line.contains("no volume nope"), "{line}");
    let line = home.fails(&["download", "vds/disk@nosnap", "-o", p(&out)]);
    assert!(line.contains("no vds/disk@nosnap"), "{line}");
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

/// `snapport ARGS` with a hang guard: a command that would wait forever (on a FIFO) is
/// killed after a minute and the test fails saying so. Returns the error line of a clean
/// failure (exit 1, one line), as [`Home::fails`].
fn fails_without_hanging(home: &Home, args: &[&str]) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .args(args)
        .env("SNAPPORT_HOME", home.path())
        .env_remove("SNAPPORT_PLUGIN_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("snapport {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "snapport {args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("snapport: error: "), "{stderr}");
    lines[0].to_string()
}

fn mkfifo(path: &Path) {
    tool("mkfifo", &[p(path)]);
}

#[test]
fn pool_names_that_would_be_paths_are_refused() {
    let home = Home::new();
    // `state/POOL` of this name is the folder beside SNAPPORT_HOME.
    let escaped = format!(
        "escaped-{}",
        home.path().file_name().unwrap().to_str().unwrap()
    );
    let outside = home.path().parent().unwrap().join(&escaped);
    for (key, why) in [
        (format!("../../{escaped}"), "starts with '.'"),
        ("a/b".to_string(), "contains '/'"),
        (".hidden".to_string(), "starts with '.'"),
        ("-n".to_string(), "starts with '-'"),
        ("a@b".to_string(), "contains '@'"),
        ("a\\u0000b".to_string(), "NUL"),
        ("a\\u001bb".to_string(), "control character"),
    ] {
        home.write_config(&format!(
            "[pools.\"{key}\"]\nplugin = \"qcow2\"\nfolders = [\"default\"]\nwritable = true\n"
        ));
        let pool = format!(
            "--pool={}",
            key.replace("\\u0000", "").replace("\\u001b", "")
        );
        for args in [
            vec!["get", "vds", &pool],
            vec!["snapshot", "create", "vd/d", &pool],
            vec!["get", "vd"],
        ] {
            let line = home.fails(&args);
            assert!(
                line.contains("config.toml: pool ") && line.contains(why),
                "{key}: {line}"
            );
            assert!(line.contains("is not a valid name"), "{key}: {line}");
        }
    }
    assert!(!outside.exists(), "{} was created", outside.display());
    assert_eq!(
        files_in(home.path()),
        ["config.toml", "default"],
        "state written under SNAPPORT_HOME"
    );
}

#[test]
fn names_in_addresses_are_checked_for_every_kind() {
    let (home, _img) = good_image();
    let out = home.out("x.raw");
    let bad = [
        ("a/b", "contains '/'"),
        ("..", "starts with '.'"),
        ("../x", "starts with '.'"),
        ("a..b", "contains '..'"),
        (".hidden", "starts with '.'"),
        ("-x", "starts with '-'"),
        ("a\nb", "control character"),
        ("a\u{1b}[2Jb", "control character"),
        ("a\u{7f}", "control character"),
    ];
    for (name, why) in bad {
        for address in [
            format!("vd/{name}"),
            format!("vi/{name}"),
            format!("vds/{name}@s"),
            format!("vds/disk@{name}"),
            format!("vm/{name}"),
            format!("vms/{name}@s"),
            format!("vms/web@{name}"),
        ] {
            let line = home.usage_fails(&["download", &address, "-o", p(&out)]);
            assert!(
                line.contains("is not a valid name") && line.contains(why),
                "{address:?}: {line}"
            );
            // The name is quoted, its control characters escaped: the line stays one line
            // and puts nothing raw on the terminal.
            assert!(
                !line.contains('\u{1b}') && !line.contains('\u{7f}'),
                "{line}"
            );
        }
        let line = home.usage_fails(&[
            "upload",
            p(&home.pool().join("disk.qcow2")),
            &format!("vd/{name}"),
        ]);
        assert!(line.contains(why), "upload vd/{name:?}: {line}");
        // `--flag=VALUE`: a value starting with '-' is still a value.
        let line = home.fails(&["snapshot", "create", "vd/disk", &format!("--name={name}")]);
        assert!(line.contains("--name") && line.contains(why), "{line}");
        let prefix = format!("--name-prefix={name}");
        let line = home.fails(&["clone", "vm/web", "--to", "vm/new", &prefix]);
        assert!(
            line.contains("--name-prefix") && line.contains(why),
            "{line}"
        );
    }
    for suffix in ["/x", "..", "@s", "\u{1b}"] {
        let suffix = format!("--name-suffix={suffix}");
        let line = home.fails(&["clone", "vm/web", "--to", "vm/new", &suffix]);
        assert!(line.contains("--name-suffix"), "{line}");
    }
    let line = home.fails(&[
        "clone",
        "vm/web",
        "--to",
        "vm/new",
        "--name-replace=web=../w",
    ]);
    assert!(line.contains("--name-replace"), "{line}");
    assert_eq!(files_in(out.parent().unwrap()), Vec::<String>::new());
    assert_eq!(files_in(&home.pool()), ["disk.qcow2"]);
}

#[test]
fn names_in_vm_configs_are_checked() {
    let (home, _img) = good_image();
    let config = home.out("vm.json");
    for (json, expect) in [
        (r#"{"name":"web\u0000","disks":[{"name":"disk"}]}"#, "NUL"),
        (
            r#"{"name":"web","disks":[{"name":"../disk"}]}"#,
            "the disk \"../disk\"",
        ),
        (
            r#"{"name":"web","disks":[{"name":"disk","pool":"../p"}]}"#,
            "the pool of disk",
        ),
        (
            r#"{"name":"web","disks":[{"name":"d\u001b[0m"}]}"#,
            "control character",
        ),
    ] {
        std::fs::write(&config, json).unwrap();
        let line = home.fails(&["create", "vm/web", "--config", p(&config)]);
        assert!(
            line.contains(expect) && line.contains("is not a valid name"),
            "{json}: {line}"
        );
    }
    assert!(!home.path().join("vms").exists());
}

#[test]
fn files_read_whole_must_be_small_regular_files() {
    // A plugin that is a character device: refused from its descriptor's type, before a
    // byte is read (it used to be read until memory ran out).
    let (home, _img) = good_image();
    home.write_config("[pools.z]\nplugin = \"/dev/zero\"\nfolders = [\"default\"]\n");
    let line = fails_without_hanging(&home, &["get", "vd", "-n", "z"]);
    assert!(
        line.contains("/dev/zero") && line.contains("not a regular file but a character device"),
        "{line}"
    );

    // A FIFO as the plugin: no writer ever comes, and the command must not wait for one.
    let fifo = home.path().join("plugin.wasm");
    mkfifo(&fifo);
    home.write_config(&format!(
        "[pools.f]\nplugin = \"{}\"\nfolders = [\"default\"]\n",
        fifo.display()
    ));
    let line = fails_without_hanging(&home, &["get", "vd", "-n", "f"]);
    assert!(line.contains("not a regular file but a FIFO"), "{line}");

    // A FIFO as config.toml.
    let home = Home::new();
    mkfifo(&home.path().join("config.toml"));
    let line = fails_without_hanging(&home, &["get", "vd"]);
    assert!(
        line.contains("config.toml") && line.contains("not a regular file but a FIFO"),
        "{line}"
    );

    // A configuration of more than 1 MiB (valid TOML: comments).
    let home = Home::new();
    let mut big = "# padding\n".repeat((1 << 20) / 10 + 1);
    big.push_str("[pools.p]\nplugin = \"qcow2\"\nfolders = [\"default\"]\n");
    home.write_config(&big);
    let line = home.fails(&["get", "vd"]);
    assert!(
        line.contains("config.toml") && line.contains("larger than the 1048576 bytes"),
        "{line}"
    );

    // A VM config that is a FIFO, and a snapshot record file that is one.
    let (home, _img) = good_image();
    let vm_fifo = home.out("vm.json");
    mkfifo(&vm_fifo);
    let line = fails_without_hanging(&home, &["create", "vm/web", "--config", p(&vm_fifo)]);
    assert!(line.contains("not a regular file but a FIFO"), "{line}");
    std::fs::create_dir_all(home.path().join("state/default")).unwrap();
    mkfifo(&home.path().join("state/default/snapshots.json"));
    let line = fails_without_hanging(&home, &["get", "vds"]);
    assert!(
        line.contains("snapshots.json") && line.contains("not a regular file but a FIFO"),
        "{line}"
    );
}

#[test]
fn symlinks_out_of_a_pool_folder_say_nothing_and_open_nothing() {
    let (home, img) = good_image();
    // A 1 GiB sparse file outside the pool, and /etc/shadow (root may read it; a plugin
    // must not even learn its size).
    let elsewhere = home.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let secret = elsewhere.join("secret.raw");
    std::fs::File::create(&secret)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    std::os::unix::fs::symlink(&secret, home.pool().join("secret.raw")).unwrap();
    std::os::unix::fs::symlink("../elsewhere/secret.raw", home.pool().join("rel.img")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", home.pool().join("shadow.raw")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", home.pool().join("dangling.raw")).unwrap();
    // A link that stays in the folder is the file it leads to.
    std::os::unix::fs::symlink("disk.qcow2", home.pool().join("alias.qcow2")).unwrap();

    let listing = home.ok(&["get", "vd", "-o", "json"]);
    let docs: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let mut names: Vec<&str> = docs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["vd/alias", "vd/disk"], "{docs}");
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(!text.contains("1073741824"), "{text}");
    let table = home.ok(&["get", "vd"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        !table.contains("secret") && !table.contains("shadow"),
        "{table}"
    );

    for address in ["vd/secret", "vd/rel", "vd/shadow", "vd/dangling"] {
        let out = home.out("x.raw");
        let line = home.fails(&["download", address, "-o", p(&out)]);
        assert!(line.contains("no volume"), "{address}: {line}");
        assert_eq!(files_in(out.parent().unwrap()), Vec::<String>::new());
    }
    let out = home.out("alias.raw");
    home.ok(&["download", "vd/alias", "-q", "-o", p(&out)]);
    tool(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", p(&out), p(&img)],
    );
}

#[test]
fn zero_or_absurd_limits_are_refused_by_key() {
    let (home, _img) = good_image();
    for (setting, expect) in [
        (
            "memory_mib = 0",
            "memory_mib = 0 is out of range: give 1 to 4096 MiB",
        ),
        (
            "memory_mib = 1000000",
            "memory_mib = 1000000 is out of range",
        ),
        (
            "call_timeout_ms = 0",
            "call_timeout_ms = 0 is out of range: give 10 to",
        ),
        (
            "call_timeout_ms = 9223372036854775807",
            "call_timeout_ms = 9223372036854775807 is out of range",
        ),
        (
            "snapshot_limit = 0",
            "snapshot_limit = 0 is out of range: give 1 to 65536",
        ),
        ("memory_mib = -1", "memory_mib"),
    ] {
        home.write_config(&format!(
            "[pools.p]\nplugin = \"qcow2\"\nfolders = [\"default\"]\n{setting}\n"
        ));
        let line = home.fails(&["get", "vd", "-n", "p"]);
        assert!(line.contains(expect), "{setting}: {line}");
        assert!(line.contains("config.toml"), "{setting}: {line}");
    }
}

#[test]
fn a_missing_pool_folder_or_device_is_named() {
    let home = Home::new();
    let gone = home.path().join("gone");
    home.write_config(&format!(
        "[pools.p]\nplugin = \"qcow2\"\nfolders = [\"{}\"]\n\n\
         [pools.d]\nplugin = \"raw\"\ndevices = {{ lun0 = \"nowhere.img\" }}\n",
        gone.display()
    ));
    let line = home.fails(&["get", "vd", "-n", "p"]);
    assert!(
        line.contains(&format!("pool p: folder {}", gone.display()))
            && line.contains(&format!("mkdir -p {}", gone.display())),
        "{line}"
    );
    let line = home.fails(&["get", "vd", "-n", "d"]);
    assert!(
        line.contains("pool d: device lun0") && line.contains("nowhere.img"),
        "{line}"
    );
    std::fs::write(&gone, b"a file").unwrap();
    let line = home.fails(&["get", "vd", "-n", "p"]);
    assert!(line.contains("is not a folder"), "{line}");
    // Nothing was created for it.
    assert!(gone.is_file());
}
