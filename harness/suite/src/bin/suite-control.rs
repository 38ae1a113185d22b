//! Judges the suite's run on the base kernel (the control run), on the host:
//! `suite-control TAP-FILE PATTERNS-FILE` prints `ok - ...` / `not ok - ...` lines and exits
//! non-zero if the outcome is not the expected one (see ublk_suite::control).

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ublk_suite::control;

fn main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tap, patterns] = args.as_slice() else {
        bail!("usage: suite-control TAP-FILE PATTERNS-FILE");
    };
    let tap_text = std::fs::read_to_string(tap).with_context(|| format!("reading {tap}"))?;
    let pat_text =
        std::fs::read_to_string(patterns).with_context(|| format!("reading {patterns}"))?;
    let results = control::parse_tap(&tap_text);
    if results.is_empty() {
        bail!("{tap} holds no test results");
    }
    let mut failed = 0;
    for (line, ok) in control::judge(&results, &control::parse_patterns(&pat_text)) {
        if ok {
            println!("ok - {line}");
        } else {
            failed += 1;
            println!("not ok - {line}");
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
