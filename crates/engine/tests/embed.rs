//! The engine embedded: `examples/embed.rs` exports a disk, snapshots it and imports an
//! image through the library alone; qemu-img checks each result.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The example's binary: cargo builds a package's examples before its tests run, into
/// `examples/` beside the `deps/` folder this test runs from.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/embed")
}

#[test]
fn a_program_exports_snapshots_and_imports_through_the_library() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins");
    if !plugins.join("qcow2.wasm").is_file() {
        panic!(
            "no {}: build the plugins first (`cargo xtask plugins`, which `cargo xtask test` runs)",
            plugins.join("qcow2.wasm").display()
        );
    }
    let home = tempfile::tempdir().unwrap();
    let pool = home.path().join("default");
    std::fs::create_dir_all(&pool).unwrap();
    let disk = pool.join("web.qcow2");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", &s(&disk), "8M"],
    );
    tool(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x5a 0 1M",
            "-c",
            "write -P 0xa5 6M 64k",
            &s(&disk),
        ],
    );
    let image = home.path().join("image.raw");
    tool("qemu-img", &["create", "-q", "-f", "raw", &s(&image), "4M"]);
    tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x33 1M 512k", &s(&image)],
    );
    let output = home.path().join("web.raw");

    let out = Command::new(example())
        .args(["web", &s(&output), &s(&image)])
        .env("SNAPPORT_HOME", home.path())
        .env("SNAPPORT_PLUGIN_PATH", &plugins)
        .output()
        .expect("running examples/embed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "embed failed: {stderr}");
    assert!(stderr.is_empty(), "the engine printed: {stderr}");
    let reports: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 3, "{reports:?}");

    // The export is the disk's content, as qemu-img reads it.
    tool(
        "qemu-img",
        &[
            "compare",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            &s(&disk),
            &s(&output),
        ],
    );
    assert_eq!(reports[0]["size"], 8 << 20);
    // The snapshot is in the image, under the name asked.
    let snapshots = tool("qemu-img", &["snapshot", "-l", &s(&disk)]);
    assert!(snapshots.contains("embedded"), "{snapshots}");
    // The imported disk is the image's content.
    let copy = pool.join("web-copy.qcow2");
    tool(
        "qemu-img",
        &[
            "compare",
            "-q",
            "-f",
            "raw",
            "-F",
            "qcow2",
            &s(&image),
            &s(&copy),
        ],
    );
    tool("qemu-img", &["check", "-q", &s(&copy)]);
}
