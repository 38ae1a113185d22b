//! Guest-wide CPU time from /proc/stat, one process's CPU time from /proc/PID/stat, and a
//! kprobe hit counter (tracefs).

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

/// utime + stime of process `pid`, all its threads (io-wq workers included), in USER_HZ
/// ticks.
pub fn proc_ticks(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let s = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_proc_ticks(&s).with_context(|| format!("parse {path}: {s:?}"))
}

/// Fields 14 and 15 of a /proc/PID/stat line, counted after the command name, which may
/// hold spaces and parentheses of its own.
fn parse_proc_ticks(stat: &str) -> Result<u64> {
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| anyhow!("no ')' after the command name"))?;
    // After ")": state (field 3) ... utime (14), stime (15).
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() < 13 {
        return Err(anyhow!("{} fields after the command name", f.len()));
    }
    let utime: u64 = f[11].parse().context("utime")?;
    let stime: u64 = f[12].parse().context("stime")?;
    Ok(utime + stime)
}

/// The pid of a process that has `path` open (a ublk server holds its /dev/ublkcN).
pub fn pid_holding(path: &str) -> Result<i32> {
    let want = std::path::Path::new(path);
    for e in std::fs::read_dir("/proc").context("read /proc")? {
        let e = e.context("read /proc")?;
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // A process may exit or hide its fds; only what can be read counts.
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t == want) {
                return Ok(pid);
            }
        }
    }
    Err(anyhow!("no process has {path} open"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_ticks_of_a_name_with_spaces() {
        let line = "4242 (ublk (q 0)) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0";
        assert_eq!(parse_proc_ticks(line).expect("parses"), 22);
        assert!(parse_proc_ticks("4242 (x) S 1").is_err());
        assert!(parse_proc_ticks("no parenthesis").is_err());
    }

    #[test]
    fn our_own_ticks_and_fds() {
        let me = std::process::id() as i32;
        proc_ticks(me).expect("our own /proc/PID/stat");
        let p = std::env::temp_dir().join(format!("ublk-bench-held-{me}"));
        let _f = std::fs::File::create(&p).expect("create");
        let path = p.to_str().expect("utf-8");
        assert_eq!(pid_holding(path).expect("held"), me);
        drop(_f);
        std::fs::remove_file(&p).expect("remove");
        assert!(pid_holding(path).is_err());
    }
}
