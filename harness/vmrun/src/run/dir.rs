//! The run directory: a run's job, status, console log and results outlive the VM there,
//! under the cache unless `--results` names one.

use crate::job::{CONSOLE_LOG, JOB_FILE, QEMU_CMDLINE, RESULTS_DIR, STATUS_FILE};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// `$UBLK_ZC_CACHE`, else `$XDG_CACHE_HOME/ublk-splice-zc`, else `~/.cache/ublk-splice-zc`
/// (as scripts/lib.sh has it).
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("UBLK_ZC_CACHE").filter(|d| !d.is_empty()) {
        return Ok(d.into());
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(Path::new(&d).join("ublk-splice-zc"));
    }
    let home = std::env::var_os("HOME")
        .context("neither UBLK_ZC_CACHE, XDG_CACHE_HOME nor HOME is set")?;
    Ok(Path::new(&home).join(".cache/ublk-splice-zc"))
}

/// `YYYYmmdd-HHMMSS`, local time.
fn timestamp() -> String {
    // SAFETY: time and localtime_r only write into the struct we hand them.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    }
}

/// The run directory: `--results`, or a new one under the cache.
pub(super) fn run_dir_path(results: Option<&Path>) -> Result<PathBuf> {
    let dir = match results {
        Some(d) => d.to_path_buf(),
        None => cache_dir()?
            .join("runs")
            .join(format!("{}-{}", timestamp(), std::process::id())),
    };
    std::path::absolute(&dir).with_context(|| format!("resolving {}", dir.display()))
}

/// Creates the run directory and clears what a previous run left in it.
pub(super) fn prepare_run_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir.join(RESULTS_DIR))
        .with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    for f in [STATUS_FILE, JOB_FILE, CONSOLE_LOG, QEMU_CMDLINE] {
        match std::fs::remove_file(dir.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("removing the old {}", dir.join(f).display()))
            }
            _ => {}
        }
    }
    Ok(dir)
}
