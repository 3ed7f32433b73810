//! Helpers shared by the end-to-end tests: a private SNAPPORT_HOME per test, the built
//! binary, and the real tools used as oracles.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A test's own snapport home with the default pool folder.
pub struct Home {
    pub dir: tempfile::TempDir,
    /// Variables every `snapport` run gets (an S3 server's endpoint and keys).
    pub env: Vec<(String, String)>,
}

impl Home {
    pub fn new() -> Home {
        Home::new_in(&std::env::temp_dir())
    }

    /// A home in `parent` (a test that needs its pool on a given file system).
    pub fn new_in(parent: &Path) -> Home {
        let dir = tempfile::Builder::new()
            .prefix("snapport-test-")
            .tempdir_in(parent)
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("default")).unwrap();
        Home {
            dir,
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pool(&self) -> PathBuf {
        self.path().join("default")
    }

    pub fn out(&self, name: &str) -> PathBuf {
        let d = self.path().join("out");
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    pub fn write_config(&self, toml: &str) {
        std::fs::write(self.path().join("config.toml"), toml).unwrap();
    }

    /// `snapport ARGS` with this home.
    pub fn snapport(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_snapport"))
            .args(args)
            .env("SNAPPORT_HOME", self.path())
            .env_remove("SNAPPORT_PLUGIN_PATH")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("running snapport")
    }

    /// `snapport ARGS`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.snapport(args);
        assert!(
            out.status.success(),
            "snapport {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        out
    }

    /// `snapport ARGS`, which must fail cleanly: exit 1, one `snapport: error:` line, no
    /// panic. Returns the error line.
    pub fn fails(&self, args: &[&str]) -> String {
        self.fails_with(1, args)
    }

    /// `snapport ARGS`, which must be refused as a usage error (an address or size that
    /// does not parse): exit 2, one `snapport: error:` line. Returns the error line.
    pub fn usage_fails(&self, args: &[&str]) -> String {
        self.fails_with(2, args)
    }

    fn fails_with(&self, code: i32, args: &[&str]) -> String {
        let out = self.snapport(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "snapport {args:?} should fail with {code}; stderr: {stderr}"
        );
        assert!(
            !stderr.contains("panicked"),
            "snapport {args:?} panicked: {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
        assert!(lines[0].starts_with("snapport: error: "), "{stderr}");
        lines[0].to_string()
    }
}

/// Whether /dev/shm is a tmpfs, where `copy_file_range` from the temporary folder's file
/// system is refused and the export and import data paths differ; says why when not.
pub fn shm_is_tmpfs() -> bool {
    let on_tmpfs = Command::new("stat")
        .args(["-f", "-c", "%T", "/dev/shm"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "tmpfs");
    if !on_tmpfs {
        eprintln!("skip: /dev/shm is not a tmpfs here; the tmpfs data path cannot be tested");
    }
    on_tmpfs
}

/// `vd/src` in the home's default pool: a 24 MiB qcow2 disk with data in three places
/// (at 0, 9 MiB and 20 MiB), holes between. Its path.
pub fn src_disk(home: &Home) -> PathBuf {
    let img = home.pool().join("src.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "24M"]);
    qemu_io(
        &img,
        "qcow2",
        &[
            "write -P 0x5a 0 1m",
            "write -P 0xa5 9m 300k",
            "write -P 0x3c 20m 4m",
        ],
    );
    img
}

/// Runs a tool that must succeed; returns stdout.
pub fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `path` made of `mib` MiB from /dev/urandom: incompressible data no tool can shortcut.
pub fn random_file(path: &Path, mib: u64) {
    tool(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", p(path)),
            "bs=1M",
            &format!("count={mib}"),
            "status=none",
        ],
    );
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

pub fn qemu_io(image: &Path, fmt: &str, cmds: &[&str]) {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(p(image));
    tool("qemu-io", &args);
}

/// `sha256sum -c` of the sidecar `OUTPUT.sha256` that `download --sha256sum` wrote,
/// run in the output's folder as a user would.
pub fn sha256sum_check(output: &Path) {
    let sidecar = format!("{}.sha256", output.file_name().unwrap().to_str().unwrap());
    let out = Command::new("sha256sum")
        .args(["-c", &sidecar])
        .current_dir(output.parent().unwrap())
        .output()
        .expect("running sha256sum");
    assert!(
        out.status.success(),
        "sha256sum -c {sidecar}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `qemu-img create -f qcow2 [-o OPTS] -b BACKING -F BACKING_FMT IMAGE SIZE`.
pub fn qcow2_overlay(
    image: &Path,
    backing: &str,
    backing_fmt: &str,
    size: &str,
    opts: Option<&str>,
) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if let Some(o) = opts {
        args.extend(["-o", o]);
    }
    args.extend(["-b", backing, "-F", backing_fmt, p(image), size]);
    tool("qemu-img", &args);
}

/// The content digest recomputed by an independent implementation (Python's hashlib)
/// over a raw file: 4 MiB groups of 64 KiB leaves. Holes (found with SEEK_DATA) are read
/// as the zeros they are, but a whole-hole group is hashed once and reused, so a 1 TiB
/// sparse file takes seconds.
pub fn python_content_digest(raw: &Path) -> String {
    let script = r#"
import hashlib, os, sys
G, L = 4 << 20, 64 << 10
H = lambda b: hashlib.sha256(b).digest()
def group(b):
    return H(b"".join(H(b[i:i + L]) for i in range(0, len(b), L)))
path = sys.argv[1]
size = os.path.getsize(path)
zero = {}
outer = hashlib.sha256()
with open(path, 'rb') as f:
    fd = f.fileno()
    pos = 0
    while pos < size:
        n = min(G, size - pos)
        try:
            data_at = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            data_at = size
        if data_at >= pos + n:
            if n not in zero:
                zero[n] = group(bytes(n))
            outer.update(zero[n])
        else:
            f.seek(pos)
            outer.update(group(f.read(n)))
        pos += n
print('sha256-64k-4m:' + outer.hexdigest())
"#;
    tool("python3", &["-c", script, p(raw)]).trim().to_string()
}

/// The digest `snapport download` wrote beside its output.
pub fn sidecar_digest(out: &Path) -> String {
    let text =
        std::fs::read_to_string(format!("{}.digest", out.display())).expect("digest sidecar");
    text.split_whitespace().next().unwrap().to_string()
}

/// Checks that `image`, an export in `format` (raw, qcow2 or raw.zst), holds the disk
/// `plain` (raw): cmp; qemu-img check and compare; zstd -t, then zstd -d (into
/// `scratch`, removed after) and cmp.
pub fn same_image(format: &str, image: &Path, plain: &Path, scratch: &Path) {
    match format {
        "raw" => {
            tool("cmp", &[p(image), p(plain)]);
        }
        "qcow2" => {
            tool("qemu-img", &["check", "-q", p(image)]);
            tool("qemu-img", &["compare", "-F", "raw", p(image), p(plain)]);
        }
        "raw.zst" => {
            tool("zstd", &["-t", "-q", p(image)]);
            tool("zstd", &["-d", "-q", "-f", p(image), "-o", p(scratch)]);
            tool("cmp", &[p(scratch), p(plain)]);
            std::fs::remove_file(scratch).unwrap();
        }
        other => panic!("no check for format {other}"),
    }
}

/// Unpacks the bundle `tar` into the new folder `dir` with `tar -x` and checks its
/// members with `sha256sum -c SHA256SUMS`, which must pass; how many it checked.
pub fn unpack_checked_bundle(tar: &Path, dir: &Path) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    tool("tar", &["-xf", p(tar), "-C", p(dir)]);
    let check = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "sha256sum -c: {said}");
    said.matches(": OK").count()
}

/// Allocated bytes of a file (st_blocks * 512).
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Files in a folder, names only (to prove nothing was left behind).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Bytes holding data in a raw file, as `qemu-img map` reports them (qemu-img's own
/// convert writes zeros as holes, so for its output this is the non-zero data).
pub fn mapped_data(raw: &Path) -> u64 {
    mapped_data_as(raw, Some("raw"))
}

/// Bytes `qemu-img map` finds data in, the image read as `format` (or as qemu-img
/// detects it).
pub fn mapped_data_as(image: &Path, format: Option<&str>) -> u64 {
    let mut args = vec!["map"];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    args.extend(["--output=json", p(image)]);
    let json = tool("qemu-img", &args);
    let map: serde_json::Value = serde_json::from_str(&json).expect("qemu-img map json");
    map.as_array()
        .expect("a list of extents")
        .iter()
        .filter(|e| e["data"].as_bool() == Some(true))
        .map(|e| e["length"].as_u64().unwrap())
        .sum()
}

/// Uploads `exported` (a file `download` wrote, with its sidecars) into the default pool
/// as `vd/NAME`, then checks the new disk with qemu-img: `check` passes, `compare` finds
/// it identical to `oracle` (a raw made by qemu-img), and it stays sparse: its allocated
/// size is within 1 MiB plus metadata of the data qemu-img finds in the oracle.
pub fn check_round_trip(home: &Home, exported: &Path, oracle: &Path, name: &str) {
    let out = home.ok(&["upload", p(exported), &format!("vd/{name}"), "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("upload -o json");
    assert!(
        doc["verified"].as_array().is_some_and(|v| !v.is_empty()),
        "{name}: the sidecar digest should have been verified: {doc}"
    );
    let imported = home.pool().join(format!("{name}.qcow2"));
    tool("qemu-img", &["check", "-f", "qcow2", p(&imported)]);
    tool(
        "qemu-img",
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            p(&imported),
            p(oracle),
        ],
    );
    let size = std::fs::metadata(oracle).unwrap().len();
    let metadata = (64 << 10) * (8 + size.div_ceil(512 << 20));
    let limit = mapped_data(oracle) + (1 << 20) + metadata;
    assert!(
        allocated(&imported) <= limit,
        "{name}: {} bytes allocated for {} bytes of data (limit {limit})",
        allocated(&imported),
        mapped_data(oracle)
    );
}
