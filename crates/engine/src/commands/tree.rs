//! `snapport tree vd/NAME`: a disk's snapshots as a family tree, each under the snapshot
//! taken before it, and `(now)` under the one the disk's content last came from.

use crate::address::Address;
use crate::snapshots::{self, View};
use crate::Engine;
use crate::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    /// vd/NAME.
    target: String,
    #[arg(short = 'n', long, default_value = crate::config::DEFAULT_POOL)]
    pool: String,
}

pub fn run(args: Args) -> Result<()> {
    let target = Address::parse(&args.target)?;
    let Address::Disk(disk) = &target else {
        bail!("{target}: tree takes a disk, vd/NAME");
    };
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let mut pool = ctx.pool(&args.pool)?;
    if !pool.list_volumes()?.iter().any(|v| &v.name == disk) {
        bail!("no {target} in pool {}", args.pool);
    }
    let views = snapshots::list(&ctx.config.home, &args.pool, &mut pool, Some(disk))?;
    let head = snapshots::update(&ctx.config.home, &args.pool, |r| r.heads.get(disk).cloned())?;
    let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
    println!("{target}");
    let roots: Vec<&View> = views
        .iter()
        .filter(|v| v.parent.as_deref().is_none_or(|p| !names.contains(&p)))
        .collect();
    let mut lines = Vec::new();
    let now_at_root = head.as_deref().is_none_or(|h| !names.contains(&h));
    draw(&views, &roots, head.as_deref(), now_at_root, "", &mut lines);
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// Appends the lines for `nodes` (siblings) and their descendants.
fn draw(
    all: &[View],
    nodes: &[&View],
    head: Option<&str>,
    now_here: bool,
    prefix: &str,
    out: &mut Vec<String>,
) {
    let count = nodes.len() + usize::from(now_here);
    for (i, v) in nodes.iter().enumerate() {
        let last = i + 1 == count;
        let consistent = if v.consistent {
            "consistent"
        } else {
            "not consistent"
        };
        let when = v.created_unix_ms.map(snapshots::utc).unwrap_or_default();
        out.push(format!(
            "{prefix}{} {}  {:?}  {consistent}  {when}",
            if last { "└─" } else { "├─" },
            v.name,
            v.phase
        ));
        let children: Vec<&View> = all
            .iter()
            .filter(|c| c.parent.as_deref() == Some(v.name.as_str()))
            .collect();
        let sub = format!("{prefix}{}", if last { "   " } else { "│  " });
        draw(
            all,
            &children,
            head,
            head == Some(v.name.as_str()),
            &sub,
            out,
        );
    }
    if now_here {
        out.push(format!("{prefix}└─ (now)"));
    }
}
