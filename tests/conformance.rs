//! The backend conformance suite (`common/conformance.rs`) on the qcow2 plugin's pool
//! (qcow2 disks made by qemu-img: plain, compressed, a backing chain, internal snapshots
//! with writes and zeroed ranges between them, and a raw file) and on the raw plugin's
//! pool (two files in a folder and a granted device). `tests/lvm.rs` runs the same suite on the lvm plugin.

mod common;
#[path = "common/conformance.rs"]
mod conformance;

use common::*;

#[test]
fn the_qcow2_pool_conforms() {
    let home = Home::new();
    let pool = home.pool();
    let d = pool.join("d.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&d), "24M"]);
    qemu_io(
        &d,
        "qcow2",
        &["write -P 0x11 0 5M", "write -P 0x12 9M 300k"],
    );
    tool("qemu-img", &["snapshot", "-c", "s1", p(&d)]);
    qemu_io(
        &d,
        "qcow2",
        &[
            "write -P 0x21 1M 64k",
            "write -z 9M 128k",
            "write -P 0x22 20M 1M",
        ],
    );
    tool("qemu-img", &["snapshot", "-c", "s2", p(&d)]);
    qemu_io(&d, "qcow2", &["write -P 0x31 2M 1M"]);

    let plain = home.out("plain.raw");
    std::fs::File::create(&plain)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    qemu_io(&plain, "raw", &["write -P 0x41 1M 2M"]);
    let packed = pool.join("packed.qcow2");
    tool(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            p(&plain),
            p(&packed),
        ],
    );
    let base = pool.join("base.qcow2");
    tool(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", p(&plain), p(&base)],
    );
    let top = pool.join("top.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            p(&top),
        ],
    );
    qemu_io(&top, "qcow2", &["write -P 0x51 2M 64k"]);
    std::fs::copy(&plain, pool.join("r.raw")).unwrap();

    let checked = conformance::check_pool(&home, "default", true);
    assert_eq!(
        (checked.disks, checked.snapshots, checked.deltas),
        (5, 2, 1),
        "{checked:?}"
    );
}

#[test]
fn the_raw_pool_conforms() {
    raw_pool_conforms("raw");
}

/// A plugin built against an earlier WIT of the series (the raw plugin's own source
/// against the frozen wit/v0.1.0) loads on this host and passes the same suite.
#[test]
fn a_plugin_built_against_wit_0_1_0_still_conforms() {
    let plugin = "test-raw-v0.1.0";
    let home = raw_pool_conforms(plugin);
    let out = home.ok(&["plugin", "inspect", plugin, "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["wit"], "snapport:backend@0.1.0", "{doc}");
    let out = home.ok(&["plugin", "inspect", "raw", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(doc["wit"], "snapport:backend@0.1.0", "{doc}");
}

/// A folder of raw files and a granted device, served by `plugin`.
fn raw_pool_conforms(plugin: &str) -> Home {
    let home = Home::new();
    let dir = home.path().join("raw");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, mib) in [("a.raw", 6u64), ("b.raw", 3), ("lun.img", 5)] {
        let f = dir.join(name);
        std::fs::File::create(&f)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        qemu_io(&f, "raw", &["write -P 0x5a 512k 1M"]);
    }
    home.write_config(&format!(
        "[pools.r]\nplugin = \"{plugin}\"\nfolders = [\"{}\"]\ndevices = {{ lun0 = \"{}\" }}\n",
        dir.display(),
        dir.join("lun.img").display()
    ));
    let checked = conformance::check_pool(&home, "r", false);
    assert_eq!(checked.disks, 3, "{checked:?}");
    home
}
