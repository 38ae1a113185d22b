//! tracefs helpers: kprobe events whose hit counts tell how often a kernel function ran.
//!
//! A probe that cannot be placed is an error, never a silent zero: a zero-copy claim
//! that rests on "the copy function ran 0 times" is only worth the probe behind it.

use crate::guest;
use anyhow::{anyhow, bail, Context, Result};
use nix::mount::{mount, MsFlags};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The tracefs mount point: an existing mount, else tracefs mounted at /sys/kernel/tracing.
pub fn root() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if let Some(p) = mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, target, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "tracefs").then(|| PathBuf::from(target))
    }) {
        return Ok(p);
    }
    guest::ensure()?;
    let target = Path::new("/sys/kernel/tracing");
    mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .context("mounting tracefs on /sys/kernel/tracing (CONFIG_FTRACE)")?;
    Ok(target.to_path_buf())
}

/// Appends `line` to the tracefs file `name` (O_APPEND, as `echo >>` does).
fn append(root: &Path, name: &str, line: &str) -> Result<()> {
    let path = root.join(name);
    let mut f = OpenOptions::new()
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(format!("{line}\n").as_bytes())
        .with_context(|| format!("writing {line:?} to {}", path.display()))
}

static NEXT_PROBE: AtomicU32 = AtomicU32::new(0);

/// An enabled kprobe event on a kernel function; removed when dropped.
pub struct Kprobe {
    root: PathBuf,
    group: String,
    event: String,
    pub symbol: String,
}

impl Kprobe {
    /// Places and enables `p:GROUP/EVENT SYMBOL`. Fails if the kernel refuses the probe
    /// (unknown symbol, notrace function, no CONFIG_KPROBE_EVENTS).
    pub fn new(symbol: &str) -> Result<Self> {
        guest::ensure()?;
        let root = root()?;
        if !root.join("kprobe_events").exists() {
            bail!(
                "{}/kprobe_events is missing (CONFIG_KPROBE_EVENTS)",
                root.display()
            );
        }
        let n = NEXT_PROBE.fetch_add(1, Ordering::Relaxed);
        let group = "ublk_suite".to_string();
        // kprobe_profile names events without their group, so make the name unique
        let event = format!(
            "p{}_{n}_{}",
            std::process::id(),
            symbol.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_")
        );
        append(
            &root,
            "kprobe_events",
            &format!("p:{group}/{event} {symbol}"),
        )
        .with_context(|| format!("cannot place a kprobe on {symbol}"))?;
        let probe = Kprobe {
            root,
            group,
            event,
            symbol: symbol.to_string(),
        };
        let enable = probe
            .root
            .join(format!("events/{}/{}/enable", probe.group, probe.event));
        std::fs::write(&enable, b"1")
            .with_context(|| format!("enabling the kprobe on {symbol}: {}", enable.display()))?;
        Ok(probe)
    }

    /// How often the probed function ran since the probe was placed.
    pub fn hits(&self) -> Result<u64> {
        let path = self.root.join("kprobe_profile");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        parse_profile(&text, &self.event).ok_or_else(|| {
            anyhow!(
                "the kprobe {} on {} is missing from {}",
                self.event,
                self.symbol,
                path.display()
            )
        })
    }
}

impl Kprobe {
    /// Only count: turn tracing off (`tracing_on` = 0), so hits are counted in
    /// kprobe_profile but no event is written to the trace buffer (less overhead in timed
    /// runs).  Not for probes read with [`Kprobe::traced`].
    pub fn count_only(&self) -> Result<()> {
        std::fs::write(self.root.join("tracing_on"), "0").context("tracing_on = 0")
    }
}

impl Drop for Kprobe {
    fn drop(&mut self) {
        let enable = self
            .root
            .join(format!("events/{}/{}/enable", self.group, self.event));
        let _ = std::fs::write(enable, b"0");
        let _ = append(
            &self.root,
            "kprobe_events",
            &format!("-:{}/{}", self.group, self.event),
        );
    }
}

impl Kprobe {
    /// Sets the event's filter (e.g. `comm ~ "ublk*"`) and empties the trace buffer: then
    /// [`Kprobe::traced`] counts only the hits that pass the filter (kprobe_profile's hit
    /// count does not look at filters).
    pub fn filter(&self, filter: &str) -> Result<()> {
        let path = self
            .root
            .join(format!("events/{}/{}/filter", self.group, self.event));
        std::fs::write(&path, filter)
            .with_context(|| format!("setting filter {filter:?} in {}", path.display()))?;
        let _ = std::fs::write(self.root.join("buffer_size_kb"), "8192");
        std::fs::write(self.root.join("trace"), "").context("clearing the trace buffer")
    }

    /// Events of this probe in the trace buffer (hits that passed the filter). Fails if
    /// the buffer overflowed (a count could be missing).
    pub fn traced(&self) -> Result<u64> {
        let text = std::fs::read_to_string(self.root.join("trace")).context("reading trace")?;
        if let Some(l) = text.lines().find(|l| l.starts_with("# entries-in-buffer")) {
            if let Some((_, written)) = l.split_once("#P") {
                let _ = written;
            }
            let nums: Vec<u64> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|x| x.parse().ok())
                .collect();
            if nums.len() >= 2 && nums[0] != nums[1] {
                bail!("the trace buffer overflowed: {l}");
            }
        }
        let tag = format!(" {}:", self.event);
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(&tag))
            .count() as u64)
    }
}

/// The hit count of `event` in the text of kprobe_profile (`  NAME  HITS  MISSES`).
fn parse_profile(text: &str, event: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        if f.next()? != event {
            return None;
        }
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_parsing() {
        let text = "  p1_0_do_splice_direct                              7               0\n  \
                    other                                              3               0\n";
        assert_eq!(parse_profile(text, "p1_0_do_splice_direct"), Some(7));
        assert_eq!(parse_profile(text, "other"), Some(3));
        assert_eq!(parse_profile(text, "p1_0"), None);
    }
}

/// The name of the kernel's text symbol `name`, or of its compiler-made clone
/// (`name.isra.0`, `name.constprop.0`, ...), from /proc/kallsyms. Fails if there is none.
pub fn kallsyms_lookup(name: &str) -> Result<String> {
    let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    find_symbol(&text, name).ok_or_else(|| {
        anyhow!(
            "no text symbol {name} (nor {name}.*) in /proc/kallsyms: is it inlined or not built?"
        )
    })
}

fn find_symbol(kallsyms: &str, name: &str) -> Option<String> {
    let mut clone = None;
    for l in kallsyms.lines() {
        let mut f = l.split_whitespace();
        let (_, kind, sym) = (f.next()?, f.next()?, f.next()?);
        if !matches!(kind, "t" | "T") {
            continue;
        }
        if sym == name {
            return Some(sym.to_string());
        }
        if clone.is_none() && sym.strip_prefix(name).is_some_and(|r| r.starts_with('.')) {
            clone = Some(sym.to_string());
        }
    }
    clone
}

#[cfg(test)]
mod kallsyms_tests {
    use super::find_symbol;

    #[test]
    fn finds_clones() {
        let t = "ffffffff8136a7a0 t ublk_copy_user_pages.isra.0\nffffffff8136a000 t ublk_copy_user_pages_x\n";
        assert_eq!(
            find_symbol(t, "ublk_copy_user_pages").as_deref(),
            Some("ublk_copy_user_pages.isra.0")
        );
        assert_eq!(
            find_symbol("1 T foo\n2 t foo.isra.0\n", "foo").as_deref(),
            Some("foo")
        );
        assert_eq!(find_symbol("1 d foo\n", "foo"), None);
    }
}

/// The address of text symbol `sym` (exact name) in /proc/kallsyms.
pub fn kallsyms_address(sym: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    text.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (a, _, s) = (f.next()?, f.next()?, f.next()?);
            (s == sym)
                .then(|| u64::from_str_radix(a, 16).ok())
                .flatten()
        })
        .ok_or_else(|| anyhow!("{sym} is not in /proc/kallsyms"))
}

/// The last lines of tracefs' error_log (why a probe definition was refused).
pub fn error_log() -> String {
    root()
        .ok()
        .and_then(|r| std::fs::read_to_string(r.join("error_log")).ok())
        .map(|t| t.lines().rev().take(4).collect::<Vec<_>>().join(" | "))
        .unwrap_or_default()
}

/// Text symbols of /proc/kallsyms sorted by address: (address, name).
fn text_symbols() -> Result<Vec<(u64, String)>> {
    let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    let mut v: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (a, k, s) = (f.next()?, f.next()?, f.next()?);
            matches!(k, "t" | "T")
                .then(|| Some((u64::from_str_radix(a, 16).ok()?, s.to_string())))?
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Reads `len` bytes of kernel memory at `addr` from /proc/kcore (an ELF core file).
fn read_kcore(addr: u64, len: usize) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/kcore").context("opening /proc/kcore")?;
    let mut eh = [0u8; 64];
    f.read_exact_at(&mut eh, 0)
        .context("reading /proc/kcore's ELF header")?;
    let u64at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let u16at = |b: &[u8], o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64at(&eh, 32), u16at(&eh, 54), u16at(&eh, 56));
    for i in 0..u64::from(phnum) {
        let mut ph = [0u8; 56];
        f.read_exact_at(&mut ph, phoff + i * u64::from(phentsize))?;
        let ptype = u32::from_le_bytes(ph[0..4].try_into().unwrap());
        let (off, vaddr, filesz) = (u64at(&ph, 8), u64at(&ph, 16), u64at(&ph, 32));
        if ptype == 1 && addr >= vaddr && addr + len as u64 <= vaddr + filesz {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off + (addr - vaddr))
                .context("reading /proc/kcore")?;
            return Ok(buf);
        }
    }
    bail!("{addr:#x} is in no segment of /proc/kcore")
}

/// Call sites of the text symbol `target`: `SYMBOL+OFFSET` of every `call rel32` (or
/// `jmp rel32`) to it in the functions whose names start with `caller_prefix`, found in the
/// running kernel's text (/proc/kcore). For a notrace function (a `static inline` one, or
/// its `.isra` clone), which kprobe events refuse, the call sites in traceable callers
/// count its calls just as well.
pub fn call_sites(target: &str, caller_prefix: &str) -> Result<Vec<String>> {
    let syms = text_symbols()?;
    let taddr = syms
        .iter()
        .find(|(_, s)| s == target)
        .map(|(a, _)| *a)
        .ok_or_else(|| anyhow!("{target} is not in /proc/kallsyms"))?;
    let mut out = Vec::new();
    for (i, (a, s)) in syms.iter().enumerate() {
        if !s.starts_with(caller_prefix) || s == target {
            continue;
        }
        let Some((end, _)) = syms.get(i + 1) else {
            continue;
        };
        let len = (end - a) as usize;
        if len == 0 || len > 1 << 16 {
            continue;
        }
        let code = read_kcore(*a, len)?;
        for k in 0..len.saturating_sub(4) {
            if code[k] != 0xe8 && code[k] != 0xe9 {
                continue;
            }
            let rel = i32::from_le_bytes(code[k + 1..k + 5].try_into().unwrap());
            let next = a + k as u64 + 5;
            if next.wrapping_add(rel as i64 as u64) == taddr {
                out.push(format!("{s}+{k}"));
            }
        }
    }
    Ok(out)
}
