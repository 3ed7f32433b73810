//! `snapport plugin test FILE.wasm`: the backend conformance suite on one plugin, one
//! line per case as it ends, exit 0 only if no case failed.

use crate::render::{print_json_pretty, stderr_logger, ReportArgs};
use snapport_engine::ops::plugin_test::{self, CaseResult, Status, TestRequest};
use snapport_engine::{Engine, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The plugin component (`FILE.wasm`), or a plugin's name on the plugin path;
    /// without it, the plugin of the pool given with -n.
    #[arg(required_unless_present = "pool")]
    plugin: Option<String>,
    /// A setting for the plugin, `KEY=VALUE` (repeatable; over the pool's).
    #[arg(long = "setting", alias = "settings", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Grant this folder (repeatable). Without --folder, --device and --pool the suite
    /// makes its own scratch pool and removes it afterwards.
    #[arg(long = "folder", value_name = "DIR")]
    folders: Vec<PathBuf>,
    /// Grant this file or block device under NAME (repeatable).
    #[arg(long = "device", value_name = "NAME=PATH")]
    devices: Vec<String>,
    /// Test on the grants of this configured pool (folders, devices, tools, gRPC
    /// endpoint, settings, limits).
    #[arg(short = 'n', long)]
    pool: Option<String>,
    /// Let the suite create (and then remove) snapport-test-* volumes and snapshots in
    /// the pool or folders given; the scratch pool is always writable.
    #[arg(long)]
    writable: bool,
    #[command(flatten)]
    out: ReportArgs,
}

/// `KEY=VALUE` split, or a usage error naming the option.
fn key_value(option: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => snapport_engine::usage!("{option} {s:?}: give KEY=VALUE"),
    }
}

pub fn run(engine: &Engine, args: Args) -> Result<()> {
    let request = TestRequest {
        plugin: args.plugin,
        pool: args.pool,
        settings: args
            .settings
            .iter()
            .map(|s| key_value("--setting", s))
            .collect::<Result<BTreeMap<_, _>>>()?,
        folders: args.folders,
        devices: args
            .devices
            .iter()
            .map(|d| key_value("--device", d).map(|(k, v)| (k, PathBuf::from(v))))
            .collect::<Result<BTreeMap<_, _>>>()?,
        writable: args.writable,
    };
    let text = args.out.text();
    let mut print = |c: &CaseResult| {
        if !text {
            return;
        }
        let verdict = match c.status {
            Status::Ok => "ok".to_string(),
            Status::Fail => format!("FAIL: {}", c.detail),
            Status::Skip => format!("skip: {}", c.detail),
        };
        println!("{:<30} {verdict}", c.name);
    };
    let report = plugin_test::run(engine, &request, Some(stderr_logger()), &mut print)?;
    if args.out.json() {
        print_json_pretty(&report);
    } else if text {
        println!(
            "{} {} ({}): {} passed, {} failed, {} skipped",
            report.plugin, report.version, report.wit, report.passed, report.failed, report.skipped
        );
    }
    let failures = report.failures();
    if !failures.is_empty() {
        snapport_engine::bail!(
            "plugin {} failed {} of {} cases: {}",
            report.plugin,
            failures.len(),
            report.cases.len(),
            failures.join(", ")
        );
    }
    Ok(())
}
