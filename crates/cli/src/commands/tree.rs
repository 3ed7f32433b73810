//! `snapport tree vd/NAME`: a disk's snapshots as a family tree, each under the snapshot
//! taken before it, and `(now)` under the one the disk's content last came from.

use crate::render::{engine, print_json_pretty, ReportArgs};
use snapport_engine::address::Address;
use snapport_engine::ops::list::{self, TargetRequest, TreeNode};
use snapport_engine::Result;

#[derive(clap::Args)]
pub struct Args {
    /// vd/NAME.
    target: String,
    #[arg(short = 'n', long, default_value = snapport_engine::config::DEFAULT_POOL)]
    pool: String,
    #[command(flatten)]
    out: ReportArgs,
}

pub fn run(args: Args) -> Result<()> {
    let req = TargetRequest {
        target: Address::parse(&args.target)?,
        pool: args.pool,
    };
    let tree = list::tree(&engine()?, &req)?;
    if args.out.json() {
        print_json_pretty(&tree);
        return Ok(());
    }
    if args.out.text() {
        println!("{}", tree.disk);
        let mut lines = Vec::new();
        let head = tree.head.as_deref();
        draw(&tree.roots, head, head.is_none(), "", &mut lines);
        lines.iter().for_each(|l| println!("{l}"));
    }
    Ok(())
}

/// Appends the lines for `nodes` (siblings) and their descendants; `now_here`: the
/// disk's present hangs last among them.
fn draw(
    nodes: &[TreeNode],
    head: Option<&str>,
    now_here: bool,
    prefix: &str,
    out: &mut Vec<String>,
) {
    let count = nodes.len() + usize::from(now_here);
    for (i, n) in nodes.iter().enumerate() {
        let (v, last) = (&n.snapshot, i + 1 == count);
        let consistent = if v.consistent {
            "consistent"
        } else {
            "not consistent"
        };
        let when = v.created.as_deref().unwrap_or_default();
        let branch = if last { "└─" } else { "├─" };
        out.push(format!(
            "{prefix}{branch} {}  {}  {consistent}  {when}",
            v.snapshot, v.phase
        ));
        let sub = format!("{prefix}{}", if last { "   " } else { "│  " });
        draw(
            &n.children,
            head,
            head == Some(v.snapshot.as_str()),
            &sub,
            out,
        );
    }
    if now_here {
        out.push(format!("{prefix}└─ (now)"));
    }
}
