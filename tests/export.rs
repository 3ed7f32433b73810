//! Interop: images made by qemu-img/qemu-io, exported by snapport, checked by qemu-img
//! (compare, check), sha256sum -c, and the content digest recomputed in Python; then each
//! export uploaded back into a new disk, checked the same way.

mod common;
use common::*;
use std::path::Path;

/// Writes a recognisable mix into an image: patterns at unaligned offsets, a run that
/// spans clusters, explicit zeros over data, and data near the end.
fn fill(img: &Path, fmt: &str, size: u64) {
    let tail = size - 3 * 4096;
    qemu_io(
        img,
        fmt,
        &[
            "write -P 0x11 0 100k",
            "write -P 0x22 1m 64k",
            "write -P 0x33 1540k 300k",
            "write -z 1600k 64k",
            "write -P 0x44 5120k 4608",
            &format!("write -P 0x55 {tail} 8k"),
        ],
    );
}

/// Exports `address` (of image `img`) to raw and qcow2 and checks both against the
/// oracle raw made by qemu-img.
fn check_export(home: &Home, address: &str, img: &Path, snapshot: Option<&str>, sha256sum: bool) {
    let tag = address.replace(['/', '@'], "_");
    let oracle = home.out(&format!("{tag}.oracle.raw"));
    let mut conv = vec!["convert", "-O", "raw"];
    let snap_opt;
    if let Some(s) = snapshot {
        snap_opt = format!("snapshot.name={s}");
        conv.extend(["-l", &snap_opt]);
    }
    conv.extend([p(img), p(&oracle)]);
    tool("qemu-img", &conv);
    let want = python_content_digest(&oracle);

    // raw
    let raw = home.out(&format!("{tag}.raw"));
    let mut args = vec!["download", address, "-o", p(&raw), "-q"];
    if sha256sum {
        args.push("--sha256sum");
    }
    home.ok(&args);
    tool(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", p(&oracle), p(&raw)],
    );
    if snapshot.is_none() {
        tool("qemu-img", &["compare", "-F", "raw", p(img), p(&raw)]);
    }
    assert_eq!(sidecar_digest(&raw), want, "{address}: raw content digest");
    if sha256sum {
        sha256sum_check(&raw);
    }
    check_round_trip(home, &raw, &oracle, &format!("rt-{tag}-raw"));

    // raw.zst: zstd -t validates it, zstd -d restores the raw disk.
    let z = home.out(&format!("{tag}.raw.zst"));
    let mut args = vec![
        "download",
        address,
        "-o",
        p(&z),
        "--format",
        "raw.zst",
        "-q",
    ];
    if sha256sum {
        args.push("--sha256sum");
    }
    home.ok(&args);
    tool("zstd", &["-q", "-t", p(&z)]);
    let unz = home.out(&format!("{tag}.unzstd.raw"));
    tool("zstd", &["-q", "-d", "-f", p(&z), "-o", p(&unz)]);
    tool("cmp", &[p(&oracle), p(&unz)]);
    assert_eq!(
        sidecar_digest(&z),
        want,
        "{address}: raw.zst content digest"
    );
    if sha256sum {
        sha256sum_check(&z);
    }
    check_round_trip(home, &z, &oracle, &format!("rt-{tag}-zst"));

    // qcow2
    let q = home.out(&format!("{tag}.qcow2"));
    let mut args = vec!["download", address, "-o", p(&q), "--format", "qcow2", "-q"];
    if sha256sum {
        args.push("--sha256sum");
    }
    home.ok(&args);
    tool("qemu-img", &["check", "-f", "qcow2", p(&q)]);
    tool(
        "qemu-img",
        &["compare", "-f", "qcow2", "-F", "raw", p(&q), p(&oracle)],
    );
    assert_eq!(sidecar_digest(&q), want, "{address}: qcow2 content digest");
    if sha256sum {
        sha256sum_check(&q);
    }
    check_round_trip(home, &q, &oracle, &format!("rt-{tag}-qcow2"));
}

fn qcow2_with(opts: &str, size: u64) -> (Home, std::path::PathBuf) {
    let home = Home::new();
    let img = home.pool().join("disk.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            opts,
            p(&img),
            &size.to_string(),
        ],
    );
    fill(&img, "qcow2", size);
    (home, img)
}

/// A size that is no multiple of any cluster size.
const ODD_SIZE: u64 = 10 * 1024 * 1024 + 3 * 512;

#[test]
fn qcow2_v3_64k() {
    let (home, img) = qcow2_with("compat=1.1,cluster_size=65536", ODD_SIZE);
    check_export(&home, "vd/disk", &img, None, true);
}

#[test]
fn qcow2_compat_0_10() {
    let (home, img) = qcow2_with("compat=0.10", ODD_SIZE);
    check_export(&home, "vd/disk", &img, None, true);
}

#[test]
fn qcow2_cluster_512() {
    let (home, img) = qcow2_with("cluster_size=512", ODD_SIZE);
    check_export(&home, "vd/disk", &img, None, true);
}

#[test]
fn qcow2_cluster_2m() {
    let (home, img) = qcow2_with("cluster_size=2M", ODD_SIZE);
    check_export(&home, "vd/disk", &img, None, true);
}

#[test]
fn qcow2_extended_l2() {
    let (home, img) = qcow2_with("extended_l2=on,cluster_size=128k", ODD_SIZE);
    // Subcluster granularity: a 4 KiB write into an otherwise unallocated cluster.
    qemu_io(
        &img,
        "qcow2",
        &["write -P 0x66 8196k 4k", "write -z 8256k 4k"],
    );
    check_export(&home, "vd/disk", &img, None, true);
}

fn compressed(ctype: &str) {
    let home = Home::new();
    let src = home.out("src.raw");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "raw", p(&src), &ODD_SIZE.to_string()],
    );
    fill(&src, "raw", ODD_SIZE);
    // Some incompressible data too, so compressed and plain clusters mix.
    tool(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", p(&src)),
            "bs=64k",
            "seek=100",
            "count=4",
            "conv=notrunc",
            "status=none",
        ],
    );
    let img = home.pool().join("disk.qcow2");
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
            p(&img),
        ],
    );
    let check = tool("qemu-img", &["check", p(&img)]);
    assert!(
        !check.contains("0.00% compressed"),
        "the fixture has no compressed cluster: {check}"
    );
    check_export(&home, "vd/disk", &img, None, true);
}

#[test]
fn qcow2_compressed_zlib() {
    compressed("zlib");
}

#[test]
fn qcow2_compressed_zstd() {
    compressed("zstd");
}

#[test]
fn backing_chain_three_deep() {
    let home = Home::new();
    let pool = home.pool();
    let (base, mid, top) = (
        pool.join("base.qcow2"),
        pool.join("mid.qcow2"),
        pool.join("top.qcow2"),
    );
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&base), "8M"]);
    fill(&base, "qcow2", 8 << 20);
    qcow2_overlay(&mid, "base.qcow2", "qcow2", "8M", None);
    qemu_io(
        &mid,
        "qcow2",
        &["write -P 0x77 1056k 32k", "write -z 0 16k"],
    );
    // The top is larger than its backing file: past 8M it reads zeros.
    qcow2_overlay(&top, "mid.qcow2", "qcow2", "12M", Some("cluster_size=4096"));
    qemu_io(
        &top,
        "qcow2",
        &[
            "write -P 0x88 60k 8k",
            "write -z 1540k 8k",
            "write -P 0x99 10m 4k",
        ],
    );
    check_export(&home, "vd/top", &top, None, true);
    check_export(&home, "vd/mid", &mid, None, false);
}

#[test]
fn raw_backing_file_and_raw_disks() {
    let home = Home::new();
    let pool = home.pool();
    let base = pool.join("base.img");
    tool("qemu-img", &["create", "-q", "-f", "raw", p(&base), "8M"]);
    fill(&base, "raw", 8 << 20);
    let top = pool.join("top.qcow2");
    qcow2_overlay(&top, "base.img", "raw", "10M", None);
    qemu_io(&top, "qcow2", &["write -P 0xab 2m 8k"]);
    check_export(&home, "vd/top", &top, None, false);
    check_export(&home, "vd/base", &base, None, false);
}

#[test]
fn internal_snapshot_as_vds() {
    let (home, img) = qcow2_with("cluster_size=65536", ODD_SIZE);
    tool("qemu-img", &["snapshot", "-c", "s1", p(&img)]);
    qemu_io(&img, "qcow2", &["write -P 0xee 0 200k", "write -z 5m 64k"]);
    check_export(&home, "vds/disk@s1", &img, Some("s1"), true);
    check_export(&home, "vd/disk", &img, None, false);

    let listing = home.ok(&["get", "vds", "-o", "json"]);
    let docs: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(docs[0]["name"], "vds/disk@s1");
    assert_eq!(docs[0]["size"], ODD_SIZE);
}

#[test]
fn one_tib_disk_with_one_mib_of_data_stays_sparse() {
    let home = Home::new();
    let img = home.pool().join("big.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "1T"]);
    qemu_io(&img, "qcow2", &["write -P 0x42 512g 1m"]);
    let raw = home.out("big.raw");
    home.ok(&["download", "vd/big", "-o", p(&raw), "-q"]);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 1 << 40);
    assert!(
        allocated(&raw) <= 2 << 20,
        "raw export allocates {} bytes",
        allocated(&raw)
    );
    tool("qemu-img", &["compare", "-F", "raw", p(&img), p(&raw)]);
    assert_eq!(sidecar_digest(&raw), python_content_digest(&raw));
    // The qcow2 export is a few MiB, so its stream digest is checked by sha256sum here;
    // the raw stream's (1 TiB of zeros: over ten minutes of hashing) is not.
    let q = home.out("big.qcow2");
    home.ok(&[
        "download",
        "vd/big",
        "-o",
        p(&q),
        "--format",
        "qcow2",
        "-q",
        "--sha256sum",
    ]);
    tool("qemu-img", &["check", p(&q)]);
    tool("qemu-img", &["compare", p(&q), p(&img)]);
    assert!(allocated(&q) <= 4 << 20);
    assert_eq!(sidecar_digest(&q), sidecar_digest(&raw));
    sha256sum_check(&q);
    // Back in: only the mebibyte of data is read and written.
    check_round_trip(&home, &raw, &raw, "rt-big-raw");
    check_round_trip(&home, &q, &raw, "rt-big-qcow2");
}

#[test]
fn stdout_streams_raw_and_qcow2() {
    let (home, img) = qcow2_with("cluster_size=65536", ODD_SIZE);
    for (fmt, name) in [("raw", "s.raw"), ("qcow2", "s.qcow2")] {
        let out = home.snapport(&["download", "vd/disk", "-o", "-", "--format", fmt, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = home.out(name);
        std::fs::write(&path, &out.stdout).unwrap();
        tool("qemu-img", &["compare", "-F", fmt, p(&img), p(&path)]);
        let summary: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
        assert_eq!(summary["output_size"], out.stdout.len() as u64);
    }
    let streamed = home.out("s.qcow2");
    tool("qemu-img", &["check", p(&streamed)]);
}

#[test]
fn listing_disks_and_plugins() {
    let (home, _img) = qcow2_with("cluster_size=65536", ODD_SIZE);
    std::fs::write(home.pool().join("notes.txt"), "not a disk").unwrap();
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "raw",
            p(&home.pool().join("r.raw")),
            "1M",
        ],
    );
    let out = home.ok(&["get", "vd", "-o", "json"]);
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = docs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vd/disk", "vd/r"]);
    assert_eq!(docs[0]["format"], "qcow2");
    assert_eq!(docs[0]["size"], ODD_SIZE);
    assert_eq!(docs[1]["format"], "raw");

    let out = home.ok(&["plugin", "list", "-o", "json"]);
    let plugins: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let qcow2 = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "qcow2")
        .expect("qcow2 plugin listed");
    assert!(qcow2["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "extents"));
    let out = home.ok(&["plugin", "inspect", "qcow2", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Built against the WIT of this tree: the package line of wit/backend.wit.
    let wit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../wit/backend.wit"
    ))
    .unwrap();
    let package = wit
        .lines()
        .find_map(|l| l.strip_prefix("package ")?.strip_suffix(';'))
        .expect("a package line");
    assert_eq!(doc["wit"], package);
    let sha = tool("sha256sum", &[doc["path"].as_str().unwrap()]);
    assert!(sha.starts_with(doc["sha256"].as_str().unwrap()));
}

#[test]
fn sparse_raw_zst_encodes_holes_without_reading_them() {
    let home = Home::new();
    let img = home.pool().join("sp.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "8G"]);
    qemu_io(
        &img,
        "qcow2",
        &[
            "write -P 0x42 0 1m",
            "write -P 0x43 5g 2m",
            "write -z 6g 4m",
        ],
    );
    let z = home.out("sp.raw.zst");
    let out = home.ok(&[
        "download",
        "vd/sp",
        "-o",
        p(&z),
        "--format",
        "raw.zst",
        "--json",
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Holes cost 4 bytes per 128 KiB (zstd RLE blocks): 8 GiB of them is 256 KiB.
    let size = std::fs::metadata(&z).unwrap().len();
    assert_eq!(summary["output_size"], size);
    assert!(
        size < 512 << 10,
        "raw.zst of 3 MiB of data in 8 GiB is {size} bytes"
    );
    assert_eq!(summary["data_bytes"], 3 << 20);
    tool("zstd", &["-q", "-t", p(&z)]);
    let unz = home.out("sp.raw");
    tool("zstd", &["-q", "-d", "-f", p(&z), "-o", p(&unz)]);
    tool("qemu-img", &["compare", "-F", "raw", p(&img), p(&unz)]);
    // A stream to stdout is the same bytes.
    let streamed = home.snapport(&["download", "vd/sp", "-o", "-", "--format", "raw.zst", "-q"]);
    assert!(streamed.status.success());
    assert_eq!(streamed.stdout, std::fs::read(&z).unwrap());
}

/// The same export onto ext4 and onto tmpfs (where `copy_file_range` from ext4 answers
/// EXDEV), and from a pool on tmpfs: the same bytes (cmp, qemu-img compare against
/// qemu-img's own conversion) and the same digests, with digests on and off, for raw and
/// qcow2. The data path differs by file system; the output must not.
#[test]
fn exports_onto_tmpfs_and_ext4_are_identical() {
    let shm = Path::new("/dev/shm");
    if !shm_is_tmpfs() {
        return;
    }
    let (home, img) = qcow2_with("compat=1.1,cluster_size=65536", ODD_SIZE);
    let oracle = home.out("oracle.raw");
    tool("qemu-img", &["convert", "-O", "raw", p(&img), p(&oracle)]);
    let want = python_content_digest(&oracle);
    // A second home whose pool lives on tmpfs, holding the same disk; its folder holds
    // the tmpfs outputs too.
    let shm_home = Home::new_in(shm);
    std::fs::copy(&img, shm_home.pool().join("disk.qcow2")).unwrap();
    for format in ["raw", "qcow2"] {
        for digest in ["chunked", "none"] {
            let tag = format!("{format}-{digest}");
            let ext4 = home.out(&format!("{tag}.img"));
            let tmpfs = shm_home.path().join(format!("{tag}.img"));
            let both = shm_home.path().join(format!("{tag}.both.img"));
            let export = |h: &Home, out: &Path| {
                h.ok(&[
                    "download",
                    "vd/disk",
                    "-q",
                    "--format",
                    format,
                    "--digest",
                    digest,
                    "-o",
                    p(out),
                ]);
            };
            export(&home, &ext4);
            export(&home, &tmpfs);
            export(&shm_home, &both);
            for out in [&ext4, &tmpfs, &both] {
                tool(
                    "qemu-img",
                    &["compare", "-f", format, "-F", "raw", p(out), p(&oracle)],
                );
            }
            tool("cmp", &[p(&ext4), p(&tmpfs)]);
            tool("cmp", &[p(&ext4), p(&both)]);
            if digest != "none" {
                for out in [&ext4, &tmpfs, &both] {
                    assert_eq!(sidecar_digest(out), want, "{tag}: {}", out.display());
                }
            }
        }
    }
}
