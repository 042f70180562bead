//! `sonoedge devices [--json]`: every V4L2 capture device with driver, card, bus, stable aliases,
//! and each format's sizes and frame rates, as a table or as JSON (shape in the README).

use clap::Args;

use sonoedge::capture::v4l2::devices;

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// One JSON array on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &DevicesArgs) -> anyhow::Result<()> {
    let list = devices::list();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", devices::table(&list));
    }
    Ok(())
}
