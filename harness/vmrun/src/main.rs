//! vmrun: `run` boots a kernel in QEMU and runs a command in it; `check-config` checks a
//! kernel .config against the config fragments.

use anyhow::{Context, Result};
use std::process::ExitCode;
use vmrun::cli::{self, Cli};
use vmrun::report::Reporter;
use vmrun::run::EXIT_VM_FAILURE;

/// Exit status for bad usage.
const EXIT_USAGE: u8 = 2;

fn check_config(args: &[String]) -> Result<ExitCode> {
    let [config, fragments @ ..] = args else {
        anyhow::bail!("usage: vmrun check-config BUILD/.config FRAGMENT...");
    };
    let read = |p: &String| std::fs::read_to_string(p).with_context(|| format!("reading {p}"));
    let config_text = read(config)?;
    let frag_texts = fragments.iter().map(read).collect::<Result<Vec<_>>>()?;
    let frag_refs: Vec<&str> = frag_texts.iter().map(String::as_str).collect();
    let bad = vmrun::config_check::check(&config_text, &frag_refs);
    if bad.is_empty() {
        eprintln!(
            "==> {config}: all options of {} fragment(s) present",
            fragments.len()
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
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let parsed = match cli::parse(&args) {
        Ok(p) => p,
        Err(e) => {
            rep.error(format!("{e:#}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match parsed {
        Cli::Help => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Cli::CheckConfig(a) => check_config(&a).unwrap_or_else(|e| {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }),
        Cli::Run(opts) => match vmrun::run::run(&opts, rep) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                rep.error(format!("{e:#}"));
                ExitCode::from(EXIT_VM_FAILURE)
            }
        },
    }
}
