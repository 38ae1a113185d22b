//! Per-device state files under /run/ublk (`ublkb<ID>.conf`, key=value),
//! written by the server once the device is live and removed on delete.
//! They carry what the driver does not know: target, backing, mode, pid.
//! `UBLK_STATE_DIR` overrides the directory (tests).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

pub const DEFAULT_STATE_DIR: &str = "/run/ublk";

pub fn state_dir() -> PathBuf {
    std::env::var_os("UBLK_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

pub fn state_path(id: u32) -> PathBuf {
    state_dir().join(format!("ublkb{id}.conf"))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevState {
    pub id: u32,
    /// Server process.
    pub pid: i32,
    pub target: String,
    /// Backing file or device ("-" for null).
    pub backing: String,
    pub zero_copy: bool,
    pub buffered: bool,
    pub queues: u16,
    pub depth: u16,
    pub size: u64,
    /// Server log file, if detached.
    pub log: Option<String>,
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

impl DevState {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "id={}\npid={}\ntarget={}\nbacking={}\nzero_copy={}\nbuffered={}\nqueues={}\ndepth={}\nsize={}\n",
            self.id,
            self.pid,
            self.target,
            self.backing,
            flag(self.zero_copy),
            flag(self.buffered),
            self.queues,
            self.depth,
            self.size
        );
        if let Some(l) = &self.log {
            s.push_str(&format!("log={l}\n"));
        }
        s
    }

    pub fn parse(text: &str) -> Result<DevState> {
        let mut st = DevState::default();
        let mut have_id = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                bail!("line {}: expected key=value, got {line:?}", n + 1);
            };
            let num = || -> Result<u64> {
                v.parse::<u64>()
                    .with_context(|| format!("line {}: {k}={v:?} is not a number", n + 1))
            };
            match k {
                "id" => {
                    st.id = u32::try_from(num()?).context("id")?;
                    have_id = true;
                }
                "pid" => {
                    st.pid = v
                        .parse::<i32>()
                        .with_context(|| format!("line {}: bad pid {v:?}", n + 1))?
                }
                "target" => st.target = v.to_string(),
                "backing" => st.backing = v.to_string(),
                "zero_copy" => st.zero_copy = v == "1",
                "buffered" => st.buffered = v == "1",
                "queues" => st.queues = u16::try_from(num()?).context("queues")?,
                "depth" => st.depth = u16::try_from(num()?).context("depth")?,
                "size" => st.size = num()?,
                "log" => st.log = Some(v.to_string()),
                _ => {} // forward compatible
            }
        }
        if !have_id {
            bail!("no id= line");
        }
        Ok(st)
    }
}

/// Write atomically (temp file + rename).
pub fn write(st: &DevState) -> Result<PathBuf> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = state_path(st.id);
    let tmp = dir.join(format!(".ublkb{}.conf.{}", st.id, std::process::id()));
    std::fs::write(&tmp, st.to_text()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(path)
}

pub fn read(id: u32) -> Option<DevState> {
    let text = std::fs::read_to_string(state_path(id)).ok()?;
    DevState::parse(&text).ok()
}

pub fn remove(id: u32) {
    let _ = std::fs::remove_file(state_path(id));
}

/// Ids that have a state file.
pub fn ids() -> Vec<u32> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(state_dir()) {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_prefix("ublkb")
                .and_then(|r| r.strip_suffix(".conf"))
                .and_then(|n| n.parse().ok())
            {
                v.push(id);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let st = DevState {
            id: 3,
            pid: 1234,
            target: "loop".into(),
            backing: "/mnt/disk.img".into(),
            zero_copy: true,
            buffered: false,
            queues: 2,
            depth: 64,
            size: 1 << 30,
            log: Some("/run/ublk/x.log".into()),
        };
        assert_eq!(DevState::parse(&st.to_text()).unwrap(), st);
        let st2 = DevState { log: None, ..st };
        assert_eq!(DevState::parse(&st2.to_text()).unwrap(), st2);
    }

    #[test]
    fn parse_errors() {
        assert!(DevState::parse("").is_err());
        assert!(DevState::parse("id=x\n").is_err());
        assert!(DevState::parse("id=1\nnonsense\n").is_err());
        assert!(DevState::parse("id=1\nqueues=70000\n").is_err());
        let st = DevState::parse("# c\nid=1\nfuture=2\nbacking=/a=b\n").unwrap();
        assert_eq!(st.backing, "/a=b");
    }
}
