//! The run's label (`ublk-suite --label patched|debug|base`), which says which kernel the
//! suite runs on and therefore what the kernel must answer.
//!
//! The runner exports the label to every test executable as `UBLK_SUITE_LABEL`. A test
//! whose expected answer depends on the kernel takes it from here, never by asking the
//! kernel: a check that probes first and then expects what it found cannot fail.

use anyhow::{bail, Result};

/// The environment variable the runner sets for the test executables.
pub const LABEL_ENV: &str = "UBLK_SUITE_LABEL";

/// What the run's label says about the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `base`: Debian's 6.1 without the series.
    Base,
    /// `patched` or `debug` (KASAN, lockdep): the series applied.
    Series,
}

/// Parses a label: `base` (or `base-…`) is the base kernel; `patched`, `debug` (or
/// `patched-…`, `debug-…`) carry the series.
pub fn parse(label: &str) -> Result<Kernel> {
    let head = label.split(['-', '_', '.']).next().unwrap_or("");
    match head {
        "base" => Ok(Kernel::Base),
        "patched" | "debug" => Ok(Kernel::Series),
        _ => bail!(
            "run label {label:?} does not say which kernel this is: use --label patched, debug \
             or base"
        ),
    }
}

/// The kernel this run is labelled for. Fails, saying why, when the runner was started
/// without `--label` (the expected answer of such a test is then unknown).
pub fn kernel() -> Result<Kernel> {
    match std::env::var(LABEL_ENV) {
        Ok(l) if !l.is_empty() => parse(&l),
        _ => bail!(
            "${LABEL_ENV} is unset: this test's expected answer depends on the kernel; run it \
             through `ublk-suite --label patched|debug|base`, or set {LABEL_ENV}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(parse("base").unwrap(), Kernel::Base);
        assert_eq!(parse("patched").unwrap(), Kernel::Series);
        assert_eq!(parse("debug").unwrap(), Kernel::Series);
        assert_eq!(parse("debug-2").unwrap(), Kernel::Series);
        assert!(parse("").is_err());
        assert!(parse("v2").is_err());
    }
}
