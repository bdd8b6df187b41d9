//! Subcommands. Each subcommand lives in its own module; this file only wires them up.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "henn", version, about = "Private neural-network inference over CKKS")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    // Subcommands are added here, one line each, by the module that owns them.
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {}
}
