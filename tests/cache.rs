//! The compiled-plugin cache cannot run corrupt code. Whatever happens to the entries in
//! `$SNAPPORT_HOME/cache/` — a flipped byte anywhere, a cut, another plugin's entry in
//! place, a FIFO or a symbolic link — every later run exports the right bytes and exits
//! 0, says why at debug level, and rewrites the entry whole; the run after that takes the
//! plugin from the cache again. Two plugins (qcow2 and raw), so each has its own entry.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The line the host logs (at debug) whenever a plugin's code does not come from the
/// cache as it is.
const CACHE_LINE: &str = "debug: compiled-code cache:";

/// A home with two pools on two plugins, and the bytes each disk must export as: pool
/// `default` (the qcow2 plugin) holds `vd/a`, a qcow2 image; pool `r` (the raw plugin)
/// holds `vd/disk`, a raw file.
struct Lab {
    home: Home,
    qcow2_source: PathBuf,
    raw_source: PathBuf,
}

fn lab() -> Lab {
    let home = Home::new();
    let qcow2_source = home.path().join("a.source");
    random_file(&qcow2_source, 3);
    let image = home.pool().join("a.qcow2");
    tool(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            p(&qcow2_source),
            p(&image),
        ],
    );
    let raw_source = home.path().join("disk.raw");
    random_file(&raw_source, 2);
    home.write_config("[pools.r]\nplugin = \"raw\"\ndevices = { disk = \"disk.raw\" }\n");
    Lab {
        home,
        qcow2_source,
        raw_source,
    }
}

/// The plugins the binary finds beside it (target/plugins).
fn plugin_file(plugin: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_snapport"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("plugins")
        .join(format!("{plugin}.wasm"))
}

impl Lab {
    fn cache(&self) -> PathBuf {
        self.home.path().join("cache")
    }

    /// `snapport download` of one pool's disk, with debug logging, under `timeout` so a
    /// run that hangs (on a FIFO, say) fails with 124 instead of stalling the suite.
    fn spawn_download(&self, pool: &str, out: &Path) -> Child {
        let disk = if pool == "r" { "vd/disk" } else { "vd/a" };
        Command::new("timeout")
            .arg("120")
            .arg(env!("CARGO_BIN_EXE_snapport"))
            .args(["download", disk, "-n", pool, "-o", p(out), "-q"])
            .env("SNAPPORT_HOME", self.home.path())
            .env("SNAPPORT_LOG", "debug")
            .env_remove("SNAPPORT_PLUGIN_PATH")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running snapport")
    }

    /// The download must have exited 0 and written exactly the pool's source bytes.
    fn check_download(&self, pool: &str, out: &Path, done: Output) -> String {
        let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
        assert_eq!(
            done.status.code(),
            Some(0),
            "download from pool {pool} (124: it hung): {stderr}"
        );
        let source = if pool == "r" {
            &self.raw_source
        } else {
            &self.qcow2_source
        };
        tool("cmp", &[p(source), p(out)]);
        std::fs::remove_file(out).unwrap();
        stderr
    }

    /// Exports the disk of each pool (one plugin each) and checks it byte for byte;
    /// returns what the runs logged.
    fn exports_right(&self) -> String {
        let mut log = String::new();
        for pool in ["default", "r"] {
            let out = self.home.out(&format!("{pool}.raw"));
            let done = self.spawn_download(pool, &out).wait_with_output().unwrap();
            log.push_str(&self.check_download(pool, &out, done));
        }
        log
    }

    /// The cache entry of `plugin`: the one named by the plugin file's SHA-256.
    fn entry(&self, plugin: &str) -> PathBuf {
        let sum = tool("sha256sum", &[p(&plugin_file(plugin))]);
        let sha = sum.split_whitespace().next().unwrap();
        let names: Vec<String> = files_in(&self.cache())
            .into_iter()
            .filter(|n| n.starts_with(sha))
            .collect();
        assert_eq!(names.len(), 1, "one entry for {plugin}: {names:?}");
        self.cache().join(&names[0])
    }

    /// The cache holds one regular file per plugin and nothing else (no temporary), and
    /// both exports now take their plugin from it without a word.
    fn settled(&self) {
        let names = files_in(&self.cache());
        assert_eq!(names.len(), 2, "two entries, no temporary: {names:?}");
        for plugin in ["qcow2", "raw"] {
            let entry = self.entry(plugin);
            let meta = std::fs::symlink_metadata(&entry).unwrap();
            assert!(meta.is_file(), "{}: {meta:?}", entry.display());
        }
        let log = self.exports_right();
        assert!(
            !log.contains(CACHE_LINE),
            "the rewritten entries must be used: {log}"
        );
    }
}

/// `log` has the cache line of `plugin`, giving `why`.
fn assert_rejected(log: &str, plugin: &str, why: &str) {
    let line = log
        .lines()
        .find(|l| l.starts_with(&format!("snapport: plugin {plugin}: {CACHE_LINE}")))
        .unwrap_or_else(|| panic!("no cache line for {plugin}: {log}"));
    assert!(line.contains(why), "{plugin}: expected {why:?} in {line}");
    assert!(line.ends_with("; compiling"), "{line}");
}

fn flip_byte(path: &Path, at: impl Fn(usize) -> usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at(bytes.len());
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_byte_anywhere_in_each_entry_is_recompiled() {
    let lab = lab();
    let log = lab.exports_right();
    assert_rejected(&log, "qcow2", "nothing cached yet");
    assert_rejected(&log, "raw", "nothing cached yet");
    lab.settled();
    // Header fields (magic, component, engine, length, digest), then the code itself: an
    // offset in an entry of a length, and the reason the rejection must give.
    type Offset = fn(usize) -> usize;
    let places: [(Offset, &str); 7] = [
        (|_| 3, "magic"),
        (|_| 20, "another component"),
        (|_| 60, "another wasmtime"),
        (|_| 85, "header says"),
        (|_| 100, "recorded SHA-256"),
        (|len| len / 2, "recorded SHA-256"),
        (|len| len - 1, "recorded SHA-256"),
    ];
    for (at, why) in places {
        for plugin in ["qcow2", "raw"] {
            flip_byte(&lab.entry(plugin), at);
        }
        let log = lab.exports_right();
        assert_rejected(&log, "qcow2", why);
        assert_rejected(&log, "raw", why);
        lab.settled();
    }
}

#[test]
fn another_plugins_entry_in_place_is_recompiled_never_loaded() {
    let lab = lab();
    lab.exports_right();
    lab.settled();
    let (qcow2, raw) = (lab.entry("qcow2"), lab.entry("raw"));
    let aside = lab.home.path().join("aside");
    std::fs::rename(&qcow2, &aside).unwrap();
    std::fs::rename(&raw, &qcow2).unwrap();
    std::fs::rename(&aside, &raw).unwrap();
    let log = lab.exports_right();
    assert_rejected(&log, "qcow2", "compiled from another component");
    assert_rejected(&log, "raw", "compiled from another component");
    lab.settled();

    // A copy rather than a swap: the qcow2 plugin's entry under both names.
    std::fs::copy(&qcow2, &raw).unwrap();
    let log = lab.exports_right();
    assert_rejected(&log, "raw", "compiled from another component");
    assert!(
        !log.contains(&format!("plugin qcow2: {CACHE_LINE}")),
        "the qcow2 entry is its own: {log}"
    );
    lab.settled();
}

#[test]
fn a_cut_entry_a_fifo_or_a_symlink_in_its_place_is_replaced() {
    let lab = lab();
    lab.exports_right();
    lab.settled();
    let (qcow2, raw) = (lab.entry("qcow2"), lab.entry("raw"));

    let cut = |path: &Path, len: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    };
    cut(&qcow2, std::fs::metadata(&qcow2).unwrap().len() / 2);
    cut(&raw, 100);
    let log = lab.exports_right();
    assert_rejected(&log, "qcow2", "header says");
    assert_rejected(&log, "raw", "shorter than the");
    lab.settled();

    // A FIFO in one's place; in the other's, a symbolic link to a good copy of its own
    // entry: not followed either, and the copy is left alone.
    let kept = lab.home.path().join("kept.cwasm");
    std::fs::copy(&raw, &kept).unwrap();
    let kept_sum = tool("sha256sum", &[p(&kept)]);
    std::fs::remove_file(&qcow2).unwrap();
    tool("mkfifo", &[p(&qcow2)]);
    std::fs::remove_file(&raw).unwrap();
    std::os::unix::fs::symlink(&kept, &raw).unwrap();
    let log = lab.exports_right();
    assert_rejected(&log, "qcow2", "not a regular file");
    assert_rejected(&log, "raw", "a symbolic link, not followed");
    lab.settled();
    assert_eq!(tool("sha256sum", &[p(&kept)]), kept_sum);

    // A symbolic link to a FIFO: neither followed nor waited on.
    let fifo = lab.home.path().join("fifo");
    tool("mkfifo", &[p(&fifo)]);
    std::fs::remove_file(&qcow2).unwrap();
    std::os::unix::fs::symlink(&fifo, &qcow2).unwrap();
    let log = lab.exports_right();
    assert_rejected(&log, "qcow2", "a symbolic link, not followed");
    lab.settled();
}

#[test]
fn concurrent_runs_compile_and_repair_the_cache_safely() {
    let lab = lab();
    // Twice: into an empty cache, then over damaged entries, four runs at once.
    for round in 0..2 {
        if round == 1 {
            for plugin in ["qcow2", "raw"] {
                flip_byte(&lab.entry(plugin), |len| len / 2);
            }
        }
        let runs: Vec<(&str, PathBuf, Child)> = ["default", "r", "default", "r"]
            .iter()
            .enumerate()
            .map(|(i, pool)| {
                let out = lab.home.out(&format!("{round}-{i}.raw"));
                let child = lab.spawn_download(pool, &out);
                (*pool, out, child)
            })
            .collect();
        for (pool, out, child) in runs {
            lab.check_download(pool, &out, child.wait_with_output().unwrap());
        }
        lab.settled();
    }
}
