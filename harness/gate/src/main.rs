//! `gate`: the gate of the series. `gate mutants` is the mutation gate (what
//! scripts/mutants.sh runs).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "gate", about = "The gate of the series")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The mutation gate: broken variants of the series (patches/mutants) must each be
    /// caught by their check. Default: a rotating sample of 3.
    Mutants(gate::mutants::MutantsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Mutants(args) => gate::mutants::main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}
