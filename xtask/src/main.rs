//! Project tasks that cargo alone cannot express: building the guest plugins (including
//! fetching a wasm32-capable compiler where rustup has none), the end-to-end demo, the
//! test suite, the fuzz run and the benches.
//!
//! Run as `cargo xtask <task>`; see `cargo xtask help`.

mod bench;
mod guest;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    match task {
        "plugins" => guest::build_plugins().map(|_| ()),
        "build" => build_all(),
        "demo" => demo(),
        "test" => test(rest),
        "fuzz" => fuzz(rest),
        "man" => man(),
        "bench" => {
            build_all()?;
            bench::run(rest)
        }
        "help" | "--help" | "-h" => {
            println!(
                "cargo xtask <task>\n\n\
                 plugins   build the guest plugins into target/plugins/*.wasm\n\
                 build     plugins + the snapport binary (release)\n\
                 demo      build, then export a disk of the default pool (makes a sample disk)\n\
                 test      plugins, then the whole test suite (extra args go to cargo test)\n\
                 fuzz [S]  fuzz the qcow2 reader S seconds, its writer and snapshot writer S/2,\n\
                           the delta, bundle, LVM and thin-pool readers, Range parser,\n\
                           gRPC framing, QMP replies, CSI metadata, format detection, encrypted sources, S3 answers, the name rule,\n\
                           plugin text and compiled-cache entries S/4\n\
                           (default 60); `fuzz build` only builds every target\n\
                 man       write the man pages into target/man (snapport.1, snapport-COMMAND.1)\n\
                 bench     export benches against qemu-img convert and cp"
            );
            Ok(())
        }
        other => bail!("unknown task {other:?}; try `cargo xtask help`"),
    }
}

/// The workspace root: xtask lives one level below it.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its rendering when it exits non-zero.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// A cargo for nested builds. Without the variables `cargo run` set for xtask itself
/// (`CARGO_PKG_NAME=xtask`, `CARGO_MANIFEST_DIR`, ...): ring's build script reruns when
/// they change, so inheriting them rebuilt ring and all above it (a minute and a half)
/// each time a build alternated between `cargo xtask` and a plain `cargo build`.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_CRATE_")
            || k.starts_with("CARGO_BIN_")
            || k == "CARGO_PRIMARY_PACKAGE"
            || k == "OUT_DIR"
        {
            cmd.env_remove(&key);
        }
    }
    cmd
}

fn build_all() -> Result<()> {
    guest::build_plugins()?;
    // The whole workspace: building one package unifies features differently and
    // rebuilds a dozen crates each way. (`cargo test` turns on more still, through the
    // tests' dev-dependencies: `cargo xtask test` does not run this.)
    run_cmd(cargo().args(["build", "--release", "--workspace"]))
}

fn snapport_bin() -> PathBuf {
    root().join("target/release/snapport")
}

fn demo() -> Result<()> {
    build_all()?;
    let home = std::env::var_os("SNAPPORT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/demo-home"));
    let pool = home.join("default");
    std::fs::create_dir_all(&pool)?;
    let sample = pool.join("sample.qcow2");
    if !sample.exists() {
        println!("making a sample disk {}", sample.display());
        run_cmd(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&sample)
                .arg("1G"),
        )?;
        run_cmd(
            Command::new("qemu-io")
                .args([
                    "-f",
                    "qcow2",
                    "-c",
                    "write -P 0x5a 0 4M",
                    "-c",
                    "write -P 0xa5 512M 1M",
                ])
                .arg(&sample)
                .arg("-c")
                .arg("write -z 600M 1M"),
        )?;
    }
    let out = home.join("sample.raw");
    run_cmd(
        Command::new(snapport_bin())
            .env("SNAPPORT_HOME", &home)
            .args(["get", "vd"]),
    )?;
    run_cmd(
        Command::new(snapport_bin())
            .env("SNAPPORT_HOME", &home)
            .args(["download", "vd/sample", "--force", "-o"])
            .arg(&out),
    )?;
    run_cmd(
        Command::new("qemu-img")
            .args(["compare", "-f", "qcow2", "-F", "raw"])
            .arg(&sample)
            .arg(&out),
    )?;
    println!(
        "demo: exported vd/sample to {}; qemu-img compare agrees",
        out.display()
    );
    Ok(())
}

/// `cargo xtask man`: the release binary writes its man pages into target/man.
fn man() -> Result<()> {
    run_cmd(cargo().args(["build", "--release", "--workspace"]))?;
    let dir = root().join("target/man");
    run_cmd(
        Command::new(root().join("target/release/snapport"))
            .arg("man")
            .arg(&dir),
    )?;
    println!(
        "man pages in {} (man -l {}/snapport.1)",
        dir.display(),
        dir.display()
    );
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    test_tools()?;
    guest::build_plugins()?;
    // No `cargo build` first: the tests' dev-dependencies turn on features (tokio's,
    // hyper's, syn's) that a plain build does not, so a build beside `cargo test` compiled
    // 124 of its 535 units (cranelift and wasmtime among them) a second time. `cargo test`
    // builds the snapport binary the tests run itself.
    run_cmd(
        cargo()
            .args(["test", "--release", "--workspace"])
            .args(extra),
    )?;
    // The guest SDK lives in the plugins/ workspace (its manifest must stay standalone
    // for `plugin new` to copy it); its pure helpers are tested on the host target.
    if extra.is_empty() {
        run_cmd(cargo().current_dir(root().join("plugins")).args([
            "test",
            "-p",
            "snapport-plugin-sdk",
        ]))?;
    }
    Ok(())
}

/// The oracles and helpers the tests run, as (program or absolute path, Debian package).
const TEST_TOOLS: &[(&str, &str)] = &[
    ("qemu-img", "qemu-utils"),
    ("zstd", "zstd"),
    ("mkfs.ext4", "e2fsprogs"),
    ("python3", "python3"),
    ("sha256sum", "coreutils"),
    ("curl", "curl"),
    ("chromium", "chromium"),
    ("lvcreate", "lvm2"),
    ("thin_dump", "thin-provisioning-tools"),
    ("strace", "strace"),
    ("man", "man-db"),
    // Encrypted exports are checked with Debian's age; ssh keys made by ssh-keygen.
    ("age", "age"),
    ("ssh-keygen", "openssh-client"),
    // The C plugin (plugins/files-c) and `plugin build --lang c`: clang for wasm32, its
    // linker, wasi-libc and the wasm32 compiler-rt (a path: a library, not a program).
    ("clang", "clang"),
    ("wasm-ld", "lld"),
    ("/usr/lib/wasm32-wasi/libc.a", "wasi-libc"),
    (
        "/usr/lib/llvm-14/lib/clang/14.0.6/lib/wasi/libclang_rt.builtins-wasm32.a",
        "libclang-rt-14-dev-wasm32",
    ),
];

/// Installs the Debian packages of [`TEST_TOOLS`] that are missing, so that the test
/// command works by itself on a fresh machine. Without root it stops before building
/// anything, with the one line that installs them.
fn test_tools() -> Result<()> {
    let on_path = |prog: &str| {
        if prog.starts_with('/') {
            return Path::new(prog).exists();
        }
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .any(|dir| dir.join(prog).is_file())
        })
    };
    let missing: Vec<&str> = TEST_TOOLS
        .iter()
        .filter(|(prog, _)| !on_path(prog))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the tests need packages that are missing; as root, run: apt-get install -y {}",
            missing.join(" ")
        );
    }
    println!("installing the tests' tools: {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// A small valid delta (`crates/core/src/delta.rs` gives the format) without its closing
/// SHA-256, behind the fuzz target's mode byte 1: a data record and a zero record.
fn delta_seed() -> Vec<u8> {
    let identity = |name: &str| {
        serde_json::json!({"name": name, "id": null, "size": 196608,
                           "created_unix_ms": null, "digest": null})
    };
    let manifest = serde_json::json!({"format": "snapport-delta", "version": 1, "disk": "d",
        "base": identity("vds/d@a"), "target": identity("vds/d@b")});
    let footer = serde_json::json!({"target_digest": "", "records": 2,
        "data_bytes": 65536, "zero_bytes": 65536});
    let mut b = vec![1u8];
    b.extend_from_slice(b"SNAPDLT1");
    let m = manifest.to_string();
    b.extend_from_slice(&(m.len() as u32).to_be_bytes());
    b.extend_from_slice(m.as_bytes());
    b.push(1);
    b.extend_from_slice(&0u64.to_be_bytes());
    b.extend_from_slice(&65536u64.to_be_bytes());
    b.extend(std::iter::repeat_n(0xa5u8, 65536));
    b.push(2);
    b.extend_from_slice(&131072u64.to_be_bytes());
    b.extend_from_slice(&65536u64.to_be_bytes());
    b.push(0);
    let f = footer.to_string();
    b.extend_from_slice(&(f.len() as u32).to_be_bytes());
    b.extend_from_slice(f.as_bytes());
    b
}

/// A VG metadata text as LVM writes it: two PVs, a linear LV of two segments and a
/// striped one.
const LVM_SEED: &str = r#"vg0 {
id = "aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg"
seqno = 4
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
extent_size = 2048
physical_volumes {
pv0 {
id = "aaaaaa-bbbb-cccc-dddd-eeee-ffff-000000"
device = "/dev/loop0"
dev_size = 131072
pe_start = 2048
pe_count = 63
}
pv1 {
id = "aaaaaa-bbbb-cccc-dddd-eeee-ffff-111111"
pe_start = 2048
pe_count = 63
}
}
logical_volumes {
lin {
id = "x"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 2
segment1 {
start_extent = 0
extent_count = 4
type = "striped"
stripe_count = 1
stripes = ["pv0", 0]
}
segment2 {
start_extent = 4
extent_count = 2
type = "striped"
stripe_count = 1
stripes = ["pv1", 3]
}
}
str {
id = "y"
segment_count = 1
segment1 {
start_extent = 0
extent_count = 8
type = "striped"
stripe_count = 2
stripe_size = 128
stripes = ["pv0", 4, "pv1", 10]
}
}
}
}
contents = "Text Format Volume Group"
version = 1
"#;

/// Thin-pool metadata made by `thin_restore` (two devices, one a snapshot-like copy),
/// its first 12 blocks behind the target's mode byte 0.
fn thin_seed(corpus: &std::path::Path) -> Result<()> {
    let dir = root().join("target/fuzz-thin-seed");
    std::fs::create_dir_all(&dir)?;
    let xml = dir.join("pool.xml");
    let mut text = String::from(
        "<superblock uuid=\"\" time=\"1\" transaction=\"1\" flags=\"0\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"4096\">\n",
    );
    for (dev, shift) in [(1, 0), (2, 7)] {
        text.push_str(&format!(
            "<device dev_id=\"{dev}\" mapped_blocks=\"40\" transaction=\"0\" creation_time=\"0\" snap_time=\"1\">\n"
        ));
        for i in 0..40u64 {
            text.push_str(&format!(
                "<single_mapping origin_block=\"{}\" data_block=\"{}\" time=\"0\"/>\n",
                i * 3,
                i + shift * (i % 2)
            ));
        }
        text.push_str("</device>\n");
    }
    text.push_str("</superblock>\n");
    std::fs::write(&xml, text)?;
    let meta = dir.join("meta.bin");
    std::fs::File::create(&meta)?.set_len(4 << 20)?;
    let made = Command::new("thin_restore")
        .arg("-i")
        .arg(&xml)
        .arg("-o")
        .arg(&meta)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !made {
        println!("fuzz: thin_restore not usable, thin-pool corpus not seeded");
        return Ok(());
    }
    let bytes = std::fs::read(&meta)?;
    let mut seed = vec![0u8];
    seed.extend_from_slice(&bytes[..12 * 4096]);
    std::fs::write(corpus.join("seed0"), seed)?;
    Ok(())
}

/// Runs one fuzz target for `seconds` over `corpus`.
fn fuzz_target(name: &str, seconds: u64, corpus: &std::path::Path) -> Result<()> {
    run_cmd(
        Command::new("cargo")
            .current_dir(root().join("fuzz"))
            .args(["+nightly", "fuzz", "run", name, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=1024")
            .arg(corpus),
    )
}

/// A small bundle made by stock `tar` (so the reader meets GNU tar's own headers): the
/// members a bundle has, with a payload that is not a real disk.
fn bundle_seed(corpus: &std::path::Path) -> Result<()> {
    let dir = root().join("target/fuzz-bundle-seed");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("disks"))?;
    std::fs::write(
        dir.join("vm.json"),
        r#"{"name":"a","disks":[{"name":"d"}]}"#,
    )?;
    std::fs::write(
        dir.join("disks/d.raw.zst"),
        [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0],
    )?;
    std::fs::write(
        dir.join("manifest.json"),
        r#"{"format":"snapport-bundle","version":1,"vm":"a","created_unix_ms":0,"snapshot":null,"consistent":false,"payload":"raw.zst","disks":[{"name":"d","pool":"default","size":65536,"file":"disks/d.raw.zst","content_digest":"x","sha256":"0000000000000000000000000000000000000000000000000000000000000000"}]}"#,
    )?;
    let sums = Command::new("sha256sum")
        .args(["manifest.json", "vm.json", "disks/d.raw.zst"])
        .current_dir(&dir)
        .output();
    let tar = |sums: &[u8]| -> Result<bool> {
        std::fs::write(dir.join("SHA256SUMS"), sums)?;
        Ok(Command::new("tar")
            .arg("-cf")
            .arg(corpus.join("seed0"))
            .args(["SHA256SUMS", "manifest.json", "vm.json", "disks/d.raw.zst"])
            .current_dir(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false))
    };
    match sums {
        Ok(o) if o.status.success() && tar(&o.stdout)? => {}
        _ => println!("fuzz: sha256sum or tar not usable, bundle corpus not seeded"),
    }
    Ok(())
}

fn fuzz(args: &[String]) -> Result<()> {
    if Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        println!("installing cargo-fuzz (not found)");
        run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    if args.first().map(String::as_str) == Some("build") {
        // Every target in one cargo run, with the flags `fuzz run` uses, so the runs that
        // follow build nothing (CI builds them while the tests run).
        return run_cmd(
            Command::new("cargo")
                .current_dir(root().join("fuzz"))
                .args(["+nightly", "fuzz", "build"]),
        );
    }
    let seconds: u64 = match args.first() {
        Some(s) => s
            .parse()
            .context("fuzz takes a number of seconds, or `build`")?,
        None => 60,
    };
    let corpus = root().join("fuzz/corpus/qcow2");
    std::fs::create_dir_all(&corpus)?;
    guest::seed_qcow2_corpus(&corpus)?;
    fuzz_target("qcow2_map", seconds, &corpus)?;
    // The writer against the reader: no seed corpus, the operations are the input.
    let writer_corpus = root().join("fuzz/corpus/qcow2_writer");
    std::fs::create_dir_all(&writer_corpus)?;
    fuzz_target("qcow2_writer", seconds.div_ceil(2), &writer_corpus)?;
    // The snapshot writer: seeds are the reader's seeds with a snapshot QEMU made, behind
    // the operations byte (all three operations).
    let snapshot_corpus = root().join("fuzz/corpus/qcow2_snapshot");
    std::fs::create_dir_all(&snapshot_corpus)?;
    guest::seed_snapshot_corpus(&corpus, &snapshot_corpus)?;
    fuzz_target("qcow2_snapshot", seconds.div_ceil(2), &snapshot_corpus)?;
    // The delta reader, from one well-formed delta (mode byte 1: the target appends the
    // closing SHA-256, so mutations get past it).
    let delta_corpus = root().join("fuzz/corpus/delta_reader");
    std::fs::create_dir_all(&delta_corpus)?;
    std::fs::write(delta_corpus.join("seed0"), delta_seed())?;
    fuzz_target("delta_reader", seconds.div_ceil(4), &delta_corpus)?;
    // The bundle reader, from a bundle-shaped archive GNU tar wrote.
    let bundle_corpus = root().join("fuzz/corpus/bundle_reader");
    std::fs::create_dir_all(&bundle_corpus)?;
    bundle_seed(&bundle_corpus)?;
    fuzz_target("bundle_reader", seconds.div_ceil(4), &bundle_corpus)?;
    // The LVM readers, from a volume group text with linear and striped LVs.
    let lvm_corpus = root().join("fuzz/corpus/lvm_metadata");
    std::fs::create_dir_all(&lvm_corpus)?;
    std::fs::write(lvm_corpus.join("seed0"), LVM_SEED)?;
    fuzz_target("lvm_metadata", seconds.div_ceil(4), &lvm_corpus)?;
    // The thin-pool metadata reader, from metadata thin_restore wrote.
    let thin_corpus = root().join("fuzz/corpus/thin_metadata");
    std::fs::create_dir_all(&thin_corpus)?;
    thin_seed(&thin_corpus)?;
    fuzz_target("thin_metadata", seconds.div_ceil(4), &thin_corpus)?;
    // The publish server's Range header parser, from a few well-formed seeds.
    let range_corpus = root().join("fuzz/corpus/range_header");
    std::fs::create_dir_all(&range_corpus)?;
    for (i, seed) in ["bytes=0-99", "bytes=-5", "bytes=10-", "bytes=0-1,2-3"]
        .iter()
        .enumerate()
    {
        let mut b = 1000u64.to_le_bytes().to_vec();
        b.extend_from_slice(seed.as_bytes());
        std::fs::write(range_corpus.join(format!("seed{i}")), b)?;
    }
    fuzz_target("range_header", seconds.div_ceil(4), &range_corpus)?;
    // gRPC message framing from a CSI server: two messages, then a partial one.
    let grpc_corpus = root().join("fuzz/corpus/grpc_frames");
    std::fs::create_dir_all(&grpc_corpus)?;
    let mut seed = vec![0, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0];
    seed.extend_from_slice(&[0, 0, 0, 1, 0, 7]);
    std::fs::write(grpc_corpus.join("seed0"), seed)?;
    fuzz_target("grpc_frames", seconds.div_ceil(4), &grpc_corpus)?;
    // Lines from QEMU's monitor: the greeting, an answer, an error and an event.
    let qmp_corpus = root().join("fuzz/corpus/qmp_reply");
    std::fs::create_dir_all(&qmp_corpus)?;
    for (i, seed) in [
        r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}"#,
        r#"{"return": [{"node-name": "disk0", "drv": "qcow2", "file": "/d.qcow2"}]}"#,
        r#"{"error": {"class": "GenericError", "desc": "Snapshot with name 's' already exists"}}"#,
        r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {}}"#,
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(qmp_corpus.join(format!("seed{i}")), seed)?;
    }
    fuzz_target("qmp_reply", seconds.div_ceil(4), &qmp_corpus)?;
    // Names and text from plugins: a bound byte, then a name with an escape sequence.
    let text_corpus = root().join("fuzz/corpus/plugin_text");
    std::fs::create_dir_all(&text_corpus)?;
    std::fs::write(text_corpus.join("seed0"), b"\x40vol\x1b[2J../x")?;
    fuzz_target("plugin_text", seconds.div_ceil(4), &text_corpus)?;
    // CSI block metadata: a 64 KiB volume read from 0, one FIXED_LENGTH message with the
    // 4 KiB blocks at 0 and 8192 (protobuf by hand: xtask does not link prost).
    let csi_corpus = root().join("fuzz/corpus/csi_metadata");
    std::fs::create_dir_all(&csi_corpus)?;
    let message: &[u8] = &[
        0x08, 0x01, 0x10, 0x80, 0x80, 0x04, 0x1a, 0x05, 0x08, 0x00, 0x10, 0x80, 0x20, 0x1a, 0x06,
        0x08, 0x80, 0x40, 0x10, 0x80, 0x20,
    ];
    let mut seed = 65536u64.to_le_bytes().to_vec();
    seed.extend_from_slice(&0u64.to_le_bytes());
    seed.extend_from_slice(&(message.len() as u16).to_le_bytes());
    seed.extend_from_slice(message);
    std::fs::write(csi_corpus.join("seed0"), seed)?;
    fuzz_target("csi_metadata", seconds.div_ceil(4), &csi_corpus)?;
    // Format detection, from the start of each format it knows.
    let detect_corpus = root().join("fuzz/corpus/image_detect");
    std::fs::create_dir_all(&detect_corpus)?;
    let seeds: [&[u8]; 8] = [
        b"QFI\xfb\0\0\0\x03",
        b"\x28\xb5\x2f\xfd\0",
        b"QED\0\0\0\x01\0",
        b"WithoutFreeSpace\x02\0\0\0",
        b"LUKS\xba\xbe\0\x02",
        b"KDMV\x01\0\0\0",
        b"conectix\0\0\0\x02",
        b"\x1f\x8b\x08\0",
    ];
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(detect_corpus.join(format!("seed{i}")), seed)?;
    }
    fuzz_target("image_detect", seconds.div_ceil(4), &detect_corpus)?;
    // An encrypted source: a real age file of the input, whole, cut or changed (mode 1),
    // and any bytes from an age header on (mode 0).
    let age_corpus = root().join("fuzz/corpus/age_source");
    std::fs::create_dir_all(&age_corpus)?;
    let age_seeds: [&[u8]; 4] = [
        b"\x01\0\0\0\0a disk image",
        b"\x01\x80\x01\x00\x10a disk image cut and changed",
        b"\0age-encryption.org/v1\n-> X25519 AAAA\n--- AAAA\n",
        b"\0-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n",
    ];
    for (i, seed) in age_seeds.iter().enumerate() {
        std::fs::write(age_corpus.join(format!("seed{i}")), seed)?;
    }
    fuzz_target("age_source", seconds.div_ceil(4), &age_corpus)?;
    // S3 answers and AWS files: a real error, a page of uploads (AWS's example), names
    // and a config file; the first byte picks which.
    let s3_corpus = root().join("fuzz/corpus/s3_answers");
    std::fs::create_dir_all(&s3_corpus)?;
    let s3_seeds: [&[u8]; 5] = [
        b"\0<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>gone &amp; away</Message></Error>",
        b"\0<ListMultipartUploadsResult xmlns=\"x\"><IsTruncated>true</IsTruncated><NextKeyMarker>k</NextKeyMarker><NextUploadIdMarker>u</NextUploadIdMarker><Upload><Key>a&lt;b</Key><UploadId>1</UploadId></Upload></ListMultipartUploadsResult>",
        b"\x01s3://backups/vm/web@nightly.raw.zst",
        b"\x01s3://a..b/k",
        b"\x02[default]\nregion = eu-west-1\n[profile lab]\nendpoint_url = http://h:9000\ns3 =\n  addressing_style = path\n",
    ];
    for (i, seed) in s3_seeds.iter().enumerate() {
        std::fs::write(s3_corpus.join(format!("seed{i}")), seed)?;
    }
    fuzz_target("s3_answers", seconds.div_ceil(4), &s3_corpus)?;
    // The name rule, from names it accepts and names it must refuse.
    let names_corpus = root().join("fuzz/corpus/names");
    std::fs::create_dir_all(&names_corpus)?;
    for (i, seed) in [
        "web-root",
        "before upgrade",
        "../x",
        "a@b",
        ".h",
        "a\u{1b}[0m",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(names_corpus.join(format!("seed{i}")), seed)?;
    }
    fuzz_target("names", seconds.div_ceil(4), &names_corpus)?;
    // Compiled-code cache entries: an artifact to seal and damage (mode 1), and a whole
    // entry with that key and an empty artifact to mutate as read back (mode 0).
    let cache_corpus = root().join("fuzz/corpus/cache_entry");
    std::fs::create_dir_all(&cache_corpus)?;
    let mut seed = vec![1, 0, 0];
    seed.extend_from_slice(&[7; 64]);
    seed.extend_from_slice(b"\x7fELF compiled code");
    std::fs::write(cache_corpus.join("seed0"), &seed)?;
    seed[0] = 0;
    seed.truncate(3 + 64);
    seed.extend_from_slice(b"snapport-cwasm\x00\x01");
    seed.extend_from_slice(&[7; 64]);
    seed.extend_from_slice(&[0; 8]);
    // SHA-256 of no bytes.
    seed.extend_from_slice(&[
        0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9,
        0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52,
        0xb8, 0x55,
    ]);
    std::fs::write(cache_corpus.join("seed1"), &seed)?;
    fuzz_target("cache_entry", seconds.div_ceil(4), &cache_corpus)
}
