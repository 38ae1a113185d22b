//! Where the suite may run: inside the test VM, as root.
//!
//! The tests mount filesystems, bind loop devices, place kprobes and drop the page
//! cache. That is what a throwaway guest is for, not a developer's machine, so the
//! helpers that do such things refuse to outside the VM.

use anyhow::{bail, Result};

/// Set by vmrun in the guest: the results directory shared with the host.
pub const RESULTS_ENV: &str = "VMRUN_RESULTS";
/// Set to 1 to run the suite outside vmrun anyway (e.g. a hand-made VM).
pub const ALLOW_ENV: &str = "UBLK_SUITE_ALLOW_HOST";

/// Fails unless we run as root in the test VM (or were told to run anyway).
pub fn ensure() -> Result<()> {
    let in_vm = std::env::var_os(RESULTS_ENV).is_some();
    let allowed = std::env::var(ALLOW_ENV).is_ok_and(|v| v == "1");
    if !in_vm && !allowed {
        bail!(
            "not in the test VM (${RESULTS_ENV} is unset): these tests mount filesystems and \
             drop caches; run them with scripts/run-qemu.sh, or set {ALLOW_ENV}=1"
        );
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the suite must run as root");
    }
    Ok(())
}
