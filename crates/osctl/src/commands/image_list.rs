//! `osctl image list [--format json]`.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use osctl_store::{Store, StoreError};

use crate::output;

#[derive(Clone, Copy, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

pub fn run(args: ListArgs, sysroot: &Path) -> anyhow::Result<ExitCode> {
    // A machine that never pulled anything has no store: that is an empty
    // list, not an error.
    let records = match Store::open(sysroot) {
        Ok(store) => store.records()?,
        Err(StoreError::NoStore(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    match args.format {
        ListFormat::Table => print!("{}", output::image_table(&records)),
        ListFormat::Json => println!("{}", output::image_json(&records)?),
    }
    Ok(ExitCode::SUCCESS)
}
