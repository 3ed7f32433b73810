//! `snapport describe vds/DISK@SNAP`: one snapshot, every field.

use crate::address::Address;
use crate::commands::{human, OutputArg};
use crate::snapshots;
use crate::Engine;
use crate::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    /// vds/DISK@SNAP.
    target: String,
    #[arg(short = 'n', long, default_value = crate::config::DEFAULT_POOL)]
    pool: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputArg::Text)]
    output: OutputArg,
}

pub fn run(args: Args) -> Result<()> {
    let target = Address::parse(&args.target)?;
    let Address::DiskSnapshot { disk, snapshot } = &target else {
        bail!("{target}: describe takes a disk snapshot, vds/DISK@SNAP");
    };
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let mut pool = ctx.pool(&args.pool)?;
    let views = snapshots::list(&ctx.config.home, &args.pool, &mut pool, Some(disk))?;
    let Some(v) = snapshots::find(&views, snapshot) else {
        bail!("no {target} in pool {}", args.pool);
    };
    match args.output {
        OutputArg::Json => println!("{}", serde_json::to_string_pretty(&v.to_json(&args.pool))?),
        OutputArg::Text => {
            let or = |s: Option<String>| s.unwrap_or_else(|| "-".into());
            println!("Name:        {}", v.address());
            println!("Pool:        {}", args.pool);
            println!("Disk:        vd/{}", v.disk);
            println!("Phase:       {:?}", v.phase);
            println!("Consistent:  {}", v.consistent);
            println!("Size:        {}", or(v.size.map(human)));
            println!("Created:     {}", or(v.created_unix_ms.map(snapshots::utc)));
            println!("Backend id:  {}", or(v.id.clone()));
            if v.backend_name.is_some() && v.backend_name != v.id {
                println!("Backend name: {}", or(v.backend_name.clone()));
            }
            println!(
                "Parent:      {}",
                or(v.parent.as_ref().map(|p| format!("vds/{}@{p}", v.disk)))
            );
            println!("Comment:     {}", or(v.comment.clone()));
            if let Some(e) = &v.error {
                println!("Error:       {e}");
            }
        }
    }
    Ok(())
}
