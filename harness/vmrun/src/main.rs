//! vmrun: `run` boots a kernel in QEMU and runs a command in it; `check-config` checks a
//! kernel .config against the config fragments.

use anyhow::{Context, Result};
use clap::Parser;
use std::process::ExitCode;
use vmrun::cli::{CheckConfigArgs, Cli, CliCommand};
use vmrun::report::Reporter;
use vmrun::run::EXIT_VM_FAILURE;

fn check_config(args: &CheckConfigArgs) -> Result<ExitCode> {
    let config = &args.config;
    let read = |p: &std::path::PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let config_text = read(config)?;
    let frag_texts = args
        .fragments
        .iter()
        .map(read)
        .collect::<Result<Vec<_>>>()?;
    let frag_refs: Vec<&str> = frag_texts.iter().map(String::as_str).collect();
    let bad = vmrun::config_check::check(&config_text, &frag_refs);
    let config = config.display();
    if bad.is_empty() {
        eprintln!(
            "==> {config}: all options of {} fragment(s) present",
            args.fragments.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for m in &bad {
        eprintln!("ERROR: {m}");
    }
    eprintln!(
        "ERROR: {} option(s) asked for by the fragments are missing from {config} \
         (Kconfig drops options whose dependencies are not met)",
        bad.len()
    );
    Ok(ExitCode::FAILURE)
}

fn main() -> ExitCode {
    let rep = Reporter;
    // Bad usage exits 2, --help 0 (clap's codes, as documented in `vmrun run --help`).
    let cli = Cli::parse();
    match cli.command {
        CliCommand::CheckConfig(a) => check_config(&a).unwrap_or_else(|e| {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }),
        CliCommand::Run(opts) => match vmrun::run::run(&opts, rep) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                rep.error(format!("{e:#}"));
                ExitCode::from(EXIT_VM_FAILURE)
            }
        },
    }
}
