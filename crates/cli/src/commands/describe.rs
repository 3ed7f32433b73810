//! `snapport describe vds/DISK@SNAP`: one snapshot, every field.

use crate::render::{engine, human, or_dash, print_json_pretty, ReportArgs};
use snapport_engine::address::Address;
use snapport_engine::ops::list::{self, TargetRequest};
use snapport_engine::Result;

#[derive(clap::Args)]
pub struct Args {
    /// vds/DISK@SNAP.
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
    let v = list::describe(&engine()?, &req)?;
    if args.out.json() {
        print_json_pretty(&v);
        return Ok(());
    }
    if !args.out.text() {
        return Ok(());
    }
    println!("Name:        {}", v.name);
    println!("Pool:        {}", v.pool);
    println!("Disk:        vd/{}", v.disk);
    println!("Phase:       {}", v.phase);
    println!("Consistent:  {}", v.consistent);
    println!("Size:        {}", or_dash(v.size.map(human)));
    println!("Created:     {}", or_dash(v.created));
    println!("Backend id:  {}", or_dash(v.id.as_ref()));
    if v.backend_name.is_some() && v.backend_name != v.id {
        println!("Backend name: {}", or_dash(v.backend_name));
    }
    println!("Parent:      {}", or_dash(v.parent));
    println!("Comment:     {}", or_dash(v.comment));
    if let Some(e) = &v.error {
        println!("Error:       {e}");
    }
    Ok(())
}
