//! `cargo xtask bench`: export benches against the tools a user would pick instead, in the
//! same run: `qemu-img convert -O raw` of the same qcow2, and `cp` of the equivalent raw
//! file (the page-cache copy a user could do at best). Every command runs `--runs` times
//! (default 5) interleaved, the median is reported, with ratios to qemu-img and each
//! command's peak RSS (from `wait4`). Caches are warm for every tool alike.
//!
//! Fixtures (made once under target/bench, reused):
//! - random.qcow2: 2 GiB of random data (and random.raw, its raw twin);
//! - fs.qcow2: a 4 GiB ext4 file system holding about 1 GiB of real files from /usr,
//!   made with `mkfs.ext4 -d` (and fs.raw);
//! - sparse.qcow2: 1 TiB virtual, 1 MiB of data.

use crate::{root, run_cmd};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const GIB: u64 = 1 << 30;

struct Measured {
    seconds: f64,
    peak_rss_mib: f64,
}

/// Runs a command once, returning wall time and peak RSS of the child (from `wait4`).
fn measure(cmd: &mut Command) -> Result<Measured> {
    let started = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet waited for; the pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    // The child is reaped: dropping `Child` does not wait, so nothing else is needed.
    drop(child);
    if r != pid {
        bail!(
            "wait4 failed for {cmd:?}: {}",
            std::io::Error::last_os_error()
        );
    }
    if status != 0 {
        bail!("{cmd:?} failed (wait status {status})");
    }
    Ok(Measured {
        seconds,
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn sh(cmd: &str) -> Result<()> {
    run_cmd(Command::new("sh").arg("-c").arg(cmd))
}

fn make_random(dir: &Path) -> Result<()> {
    let raw = dir.join("random.raw");
    if !raw.exists() {
        println!("bench: making 2 GiB of random data");
        let tmp = dir.join("random.raw.tmp");
        sh(&format!(
            "head -c {} /dev/urandom > {}",
            2 * GIB,
            tmp.display()
        ))?;
        std::fs::rename(&tmp, &raw)?;
    }
    Ok(())
}

fn make_fs(dir: &Path) -> Result<()> {
    let raw = dir.join("fs.raw");
    if raw.exists() {
        return Ok(());
    }
    println!("bench: making a 4 GiB ext4 image with about 1 GiB of files from /usr");
    let stage = dir.join("fs-stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    let mut total = 0u64;
    let mut stack = vec![PathBuf::from("/usr")];
    'walk: while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e.path().strip_prefix("/usr").unwrap().to_path_buf();
                let dest = stage.join(&rel);
                std::fs::create_dir_all(dest.parent().unwrap())?;
                if let Ok(n) = std::fs::copy(e.path(), &dest) {
                    total += n;
                }
                if total >= GIB {
                    break 'walk;
                }
            }
        }
    }
    println!(
        "bench: staged {:.2} GiB of files",
        total as f64 / GIB as f64
    );
    let tmp = dir.join("fs.raw.tmp");
    let _ = std::fs::remove_file(&tmp);
    run_cmd(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&stage)
            .arg(&tmp)
            .arg("4G"),
    )?;
    std::fs::rename(&tmp, &raw)?;
    std::fs::remove_dir_all(&stage)?;
    Ok(())
}

fn to_qcow2(raw: &Path, qcow2: &Path) -> Result<()> {
    if !qcow2.exists() {
        run_cmd(
            Command::new("qemu-img")
                .args(["convert", "-O", "qcow2"])
                .arg(raw)
                .arg(qcow2),
        )?;
    }
    Ok(())
}

/// One command of a bench case.
struct Variant {
    label: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
}

fn snapport() -> PathBuf {
    root().join("target/release/snapport")
}

/// One bench case: the snapport variants and the competitors on the same image.
fn compare(
    home: &Path,
    out_dir: &Path,
    name: &str,
    raw: &Path,
    runs: usize,
) -> Result<Vec<(String, f64, f64)>> {
    let qcow2 = home.join("default").join(format!("{name}.qcow2"));
    let out = out_dir.join("out.raw");
    let addr = format!("vd/{name}");
    let snap = |extra: &[&str]| -> Vec<OsString> {
        let mut a: Vec<OsString> = ["download", &addr, "-q"]
            .iter()
            .map(OsString::from)
            .collect();
        a.extend(extra.iter().map(OsString::from));
        a.extend(["-o".into(), out.clone().into_os_string()]);
        a
    };
    let variants = [
        Variant {
            label: "qemu-img convert -O raw",
            program: "qemu-img".into(),
            args: vec![
                "convert".into(),
                "-O".into(),
                "raw".into(),
                qcow2.clone().into(),
                out.clone().into(),
            ],
        },
        Variant {
            label: "cp (raw twin)",
            program: "cp".into(),
            args: vec![raw.into(), out.clone().into()],
        },
        Variant {
            label: "snapport download",
            program: snapport(),
            args: snap(&[]),
        },
        Variant {
            label: "snapport download --digest none",
            program: snapport(),
            args: snap(&["--digest", "none"]),
        },
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut rss: Vec<f64> = vec![0.0; variants.len()];
    for run in 0..=runs {
        for (i, v) in variants.iter().enumerate() {
            let _ = std::fs::remove_file(&out);
            sh("sync")?;
            let m = measure(
                Command::new(&v.program)
                    .args(&v.args)
                    .env("SNAPPORT_HOME", home),
            )?;
            // Run 0 warms the page cache for every tool alike and is not counted.
            if run > 0 {
                times[i].push(m.seconds);
                rss[i] = rss[i].max(m.peak_rss_mib);
            }
        }
    }
    let _ = std::fs::remove_file(&out);
    Ok(variants
        .iter()
        .enumerate()
        .map(|(i, v)| (v.label.to_string(), median(times[i].clone()), rss[i]))
        .collect())
}

pub fn run(args: &[String]) -> Result<()> {
    let mut runs = 5;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            other => bail!("bench: unknown argument {other}"),
        }
    }
    let dir = root().join("target/bench");
    let home = dir.join("home");
    let pool = home.join("default");
    std::fs::create_dir_all(&pool)?;
    make_random(&dir)?;
    to_qcow2(&dir.join("random.raw"), &pool.join("random.qcow2"))?;
    make_fs(&dir)?;
    to_qcow2(&dir.join("fs.raw"), &pool.join("fs.qcow2"))?;
    let sparse = pool.join("sparse.qcow2");
    if !sparse.exists() {
        run_cmd(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&sparse)
                .arg("1T"),
        )?;
        run_cmd(
            Command::new("qemu-io")
                .args(["-f", "qcow2", "-c", "write -P 0x42 512g 1m"])
                .arg(&sparse),
        )?;
    }

    println!(
        "\nbench: median of {runs} runs (warm cache), ratios against qemu-img convert -O raw\n"
    );
    // (case, label, target ratio vs qemu-img)
    let targets: &[(&str, &str, f64)] = &[
        ("random", "snapport download", 1.0),
        ("random", "snapport download --digest none", 0.67),
        ("fs", "snapport download", 0.67),
        ("fs", "snapport download --digest none", 0.67),
    ];
    let mut verdicts = Vec::new();
    for (case, raw) in [
        ("random", dir.join("random.raw")),
        ("fs", dir.join("fs.raw")),
    ] {
        let results = compare(&home, &dir, case, &raw, runs)?;
        let qemu = results[0].1;
        println!("{case}.qcow2");
        println!(
            "  {:<34} {:>9} {:>9} {:>12}",
            "command", "seconds", "x qemu", "peak MiB"
        );
        for (label, secs, rss) in &results {
            println!("  {label:<34} {secs:>9.3} {:>9.2} {rss:>12.1}", secs / qemu);
        }
        for (c, label, target) in targets.iter().filter(|t| t.0 == case) {
            let (_, secs, rss) = results.iter().find(|r| r.0 == *label).unwrap();
            let ratio = secs / qemu;
            let ok = ratio <= *target && *rss <= 256.0;
            verdicts.push(format!(
                "{}  {c}: {label}: {ratio:.2} x qemu-img (target <= {target}), peak {rss:.0} MiB (target <= 256)",
                if ok { "PASS" } else { "MISS" }
            ));
        }
        println!();
    }

    // Sparse: 1 TiB virtual, 1 MiB of data, to raw.
    let out = dir.join("sparse.raw");
    let mut times = Vec::new();
    for _ in 0..runs {
        let _ = std::fs::remove_file(&out);
        let m = measure(
            Command::new(snapport())
                .env("SNAPPORT_HOME", &home)
                .args(["download", "vd/sparse", "-q", "-o"])
                .arg(&out),
        )?;
        times.push(m.seconds);
    }
    let _ = std::fs::remove_file(&out);
    let t = median(times);
    verdicts.push(format!(
        "{}  sparse: 1 TiB disk with 1 MiB of data to raw in {t:.3} s (target < 1 s)",
        if t < 1.0 { "PASS" } else { "MISS" }
    ));
    for v in &verdicts {
        println!("{v}");
    }
    Ok(())
}
