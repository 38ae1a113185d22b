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
        let event = format!("p{}_{n}_{}", std::process::id(), symbol.replace('.', "_"));
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
