use anyhow::{bail, Context, Result};
use std::process::ExitCode;

fn check_config(args: &[String]) -> Result<ExitCode> {
    let [config, fragments @ ..] = args else {
        bail!("usage: vmrun check-config BUILD/.config FRAGMENT...");
    };
    let read = |p: &String| std::fs::read_to_string(p).with_context(|| format!("reading {p}"));
    let config_text = read(config)?;
    let frag_texts = fragments.iter().map(read).collect::<Result<Vec<_>>>()?;
    let frag_refs: Vec<&str> = frag_texts.iter().map(String::as_str).collect();
    let bad = vmrun::config_check::check(&config_text, &frag_refs);
    if bad.is_empty() {
        eprintln!("==> {config}: all options of {} fragment(s) present", fragments.len());
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

fn main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check-config") => check_config(&args[1..]),
        _ => bail!("usage: vmrun check-config BUILD/.config FRAGMENT..."),
    }
}
