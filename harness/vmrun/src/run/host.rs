//! What a run takes from the host: the kernel image, QEMU, vm-init and the TSC frequency.

use crate::job::hidden_in_guest;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where a kernel build directory (O=) keeps the image.
pub const BUILD_DIR_IMAGE: &str = "arch/x86/boot/bzImage";

/// The kernel image: `path` itself, or the image of a kernel build directory.
pub fn resolve_kernel(path: &Path) -> Result<PathBuf> {
    let abs = path
        .canonicalize()
        .with_context(|| format!("the kernel {} is missing", path.display()))?;
    if abs.is_dir() {
        let image = abs.join(BUILD_DIR_IMAGE);
        if !image.is_file() {
            bail!(
                "--kernel {}: a directory, but not a built kernel build directory: \
                 {BUILD_DIR_IMAGE} is missing (make O={} bzImage builds it)",
                path.display(),
                abs.display()
            );
        }
        return Ok(image);
    }
    if !abs.is_file() {
        bail!(
            "--kernel {}: neither a kernel image nor a build directory",
            path.display()
        );
    }
    Ok(abs)
}

pub(super) fn find_qemu() -> Result<PathBuf> {
    if let Some(q) = std::env::var_os("VMRUN_QEMU").filter(|q| !q.is_empty()) {
        return Ok(q.into());
    }
    which::which("qemu-system-x86_64")
        .context("qemu-system-x86_64 is not in PATH (install qemu-system-x86)")
}

/// vm-init: `$VMRUN_INIT`, else next to this program.
pub(super) fn find_init() -> Result<PathBuf> {
    let init = match std::env::var_os("VMRUN_INIT").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .context("finding vmrun's own path")?
            .with_file_name("vm-init"),
    };
    let init = init.canonicalize().with_context(|| {
        format!(
            "the guest init {} is missing (cargo build --bins builds it)",
            init.display()
        )
    })?;
    if let Some(m) = hidden_in_guest(&init) {
        bail!(
            "the guest init {} is under {m}, which the guest mounts over",
            init.display()
        );
    }
    Ok(init)
}

/// The host's TSC frequency in kHz, rounded to the MHz, measured against
/// CLOCK_MONOTONIC_RAW over 50 ms; `None` when the host's TSC does not tick at a constant
/// rate (no `constant_tsc` and `nonstop_tsc` in /proc/cpuinfo) or the measure is unsure.
/// Under TCG the guest's TSC is the host's.
#[cfg(target_arch = "x86_64")]
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    if !(has("constant_tsc") && has("nonstop_tsc")) {
        return None;
    }
    fn now_ns() -> Option<u64> {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime only fills the struct we hand it.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut t) } != 0 {
            return None;
        }
        Some(u64::try_from(t.tv_sec).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec).ok()?)
    }
    // One end of the measure: a TSC read between two clock reads at most 2 µs apart.
    fn sample() -> Option<(u64, u64)> {
        for _ in 0..1000 {
            let before = now_ns()?;
            // SAFETY: rdtsc has no preconditions on x86_64.
            let tsc = unsafe { std::arch::x86_64::_rdtsc() };
            let after = now_ns()?;
            if after - before < 2_000 {
                return Some(((before + after) / 2, tsc));
            }
        }
        None
    }
    let (ns1, tsc1) = sample()?;
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (ns2, tsc2) = sample()?;
    let khz = tsc2.checked_sub(tsc1)? as f64 * 1e6 / ns2.checked_sub(ns1)? as f64;
    let mhz = (khz / 1000.0).round() as u64;
    (mhz > 0).then_some(mhz * 1000)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn host_tsc_khz() -> Option<u64> {
    None
}

/// What a run takes from the host: the programs, and the TSC frequency the guest sees
/// under TCG.
#[derive(Debug, Clone)]
pub struct Host {
    pub qemu: PathBuf,
    pub init: PathBuf,
    pub tsc_khz: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmrun-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn kernel_image_or_build_directory() {
        let d = temp_dir("kernel");
        let image = d.join("out/arch/x86/boot/bzImage");
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        std::fs::write(&image, b"x").unwrap();
        assert_eq!(resolve_kernel(&d.join("out")).unwrap(), image);
        assert_eq!(resolve_kernel(&image).unwrap(), image);
        let e = format!("{:#}", resolve_kernel(&d).unwrap_err());
        assert!(
            e.contains("not a built kernel build directory: arch/x86/boot/bzImage is missing"),
            "{e}"
        );
        let e = format!("{:#}", resolve_kernel(&d.join("nope")).unwrap_err());
        assert!(e.contains("is missing"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn tsc_frequency() {
        // Measured twice, the host's TSC gives the same MHz (the command line must not
        // change from run to run), and a plausible one.
        let Some(a) = host_tsc_khz() else {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            assert!(
                !(cfg!(target_arch = "x86_64")
                    && cpuinfo.contains(" constant_tsc")
                    && cpuinfo.contains(" nonstop_tsc")),
                "a constant TSC, but no frequency measured"
            );
            return;
        };
        assert_eq!(host_tsc_khz(), Some(a));
        assert!((100_000..=10_000_000).contains(&a), "{a} kHz");
        assert_eq!(a % 1000, 0);
    }
}
