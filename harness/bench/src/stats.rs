//! Guest-wide CPU time from /proc/stat and a kprobe hit counter (tracefs).

use anyhow::{anyhow, Context, Result};

/// Busy CPU time of all CPUs, in USER_HZ ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTicks {
    /// user + nice
    pub user: u64,
    /// system + irq + softirq
    pub sys: u64,
}

impl CpuTicks {
    pub fn read() -> Result<CpuTicks> {
        let s = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
        let line = s
            .lines()
            .next()
            .ok_or_else(|| anyhow!("empty /proc/stat"))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse::<u64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("parse /proc/stat line {line:?}"))?;
        if v.len() < 7 {
            return Err(anyhow!("short /proc/stat cpu line {line:?}"));
        }
        // user nice system idle iowait irq softirq
        Ok(CpuTicks {
            user: v[0] + v[1],
            sys: v[2] + v[5] + v[6],
        })
    }

    pub fn delta(self, before: CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user.saturating_sub(before.user),
            sys: self.sys.saturating_sub(before.sys),
        }
    }
}

pub fn user_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// The workspace's kprobe helper (hits of a kernel function, from kprobe_profile).
pub use ublk_suite::tracefs::Kprobe as KprobeCounter;
