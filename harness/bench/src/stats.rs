//! Guest-wide CPU time from /proc/stat and a kprobe hit counter (tracefs).

use std::path::{Path, PathBuf};

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

/// A kprobe event whose hits (kprobe_profile) count calls of a function.
pub struct KprobeCounter {
    tracefs: PathBuf,
    event: String,
    func: String,
}

const GROUP: &str = "ublkbench";

fn tracefs() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("kprobe_events").exists())
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {text:?} to {}", path.display()))
}

impl KprobeCounter {
    /// Places `p:ublkbench/EVENT FUNC` and enables it with tracing off (the
    /// hit counter still counts; nothing goes to the ring buffer).
    pub fn new(event: &str, func: &str) -> Result<KprobeCounter> {
        let tracefs = tracefs().ok_or_else(|| anyhow!("no tracefs with kprobe_events"))?;
        std::fs::write(tracefs.join("tracing_on"), "0").context("tracing_on=0")?;
        append(
            &tracefs.join("kprobe_events"),
            &format!("p:{GROUP}/{event} {func}\n"),
        )
        .with_context(|| format!("place a kprobe on {func}"))?;
        let k = KprobeCounter {
            tracefs,
            event: event.into(),
            func: func.into(),
        };
        std::fs::write(
            k.tracefs.join(format!("events/{GROUP}/{event}/enable")),
            "1",
        )
        .with_context(|| format!("enable kprobe {event}"))?;
        Ok(k)
    }

    pub fn func(&self) -> &str {
        &self.func
    }

    pub fn hits(&self) -> Result<u64> {
        let s = std::fs::read_to_string(self.tracefs.join("kprobe_profile"))
            .context("read kprobe_profile")?;
        let name = format!("{GROUP}/{}", self.event);
        for l in s.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 2 && (f[0] == name || f[0] == self.event) {
                return f[1]
                    .parse()
                    .with_context(|| format!("parse kprobe_profile line {l:?}"));
            }
        }
        Err(anyhow!("kprobe {name} not in kprobe_profile"))
    }
}

impl Drop for KprobeCounter {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.tracefs
                .join(format!("events/{GROUP}/{}/enable", self.event)),
            "0",
        );
        let _ = append(
            &self.tracefs.join("kprobe_events"),
            &format!("-:{GROUP}/{}\n", self.event),
        );
    }
}
