//! Running the `ublk` command line (target/release/ublk) from tests.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::scratch::find_tool;
use crate::ublkdev::wait_block_node;

/// target/release/ublk (next to the deps/ directory of the running test executable), or
/// $UBLK_BIN.
pub fn ublk_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("UBLK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let dir = exe
        .parent()
        .context("the test executable has no directory")?;
    let dir = match dir.parent() {
        Some(p) if dir.ends_with("deps") => p,
        _ => dir,
    };
    let p = dir.join("ublk");
    if !p.is_file() {
        bail!(
            "{} is missing: scripts/build-suite.sh builds it (cargo build --workspace --release --bins)",
            p.display()
        );
    }
    Ok(p)
}

/// What a `ublk` command did.
pub struct CliOut {
    pub ok: bool,
    pub code: Option<i32>,
    /// stdout then stderr.
    pub text: String,
}

/// Runs `ublk ARGS` to completion.
pub fn ublk_cli(args: &[&str]) -> Result<CliOut> {
    let out = Command::new(ublk_bin()?)
        .args(args)
        .output()
        .with_context(|| format!("running ublk {}", args.join(" ")))?;
    Ok(CliOut {
        ok: out.status.success(),
        code: out.status.code(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// The device id from `dev_id N /dev/ublkbN ...`.
pub fn parse_dev_id(text: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        l.strip_prefix("dev_id ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// `ublk add ARGS` (detached server); returns the device id once /dev/ublkbN is a block
/// device.
pub fn add(args: &[&str]) -> Result<u32> {
    let mut all = vec!["add"];
    all.extend_from_slice(args);
    let o = ublk_cli(&all)?;
    if !o.ok {
        bail!("ublk {} failed: {}", all.join(" "), o.text);
    }
    let id = parse_dev_id(&o.text)
        .ok_or_else(|| anyhow!("ublk {}: no dev_id in {:?}", all.join(" "), o.text))?;
    wait_block_node(id, Duration::from_secs(10))?;
    Ok(id)
}

/// `ublk del -n ID`, which must succeed.
pub fn del(id: u32) -> Result<()> {
    let o = ublk_cli(&["del", "-n", &id.to_string(), "--timeout", "60"])?;
    if !o.ok {
        bail!("ublk del -n {id}: {}", o.text);
    }
    Ok(())
}

/// A foreground `ublk add ... --foreground` server, as a child process; killed (SIGKILL)
/// and reaped on drop if it still runs.
pub struct FgServer {
    pub child: Child,
    pub id: u32,
    pub out: PathBuf,
}

impl Drop for FgServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `ublk add ARGS --foreground` with its output in `out`; returns once the
/// device is live and /dev/ublkbN is a block device.
pub fn spawn_fg(args: &[&str], out: &Path) -> Result<FgServer> {
    let f = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let child = Command::new(ublk_bin()?)
        .arg("add")
        .args(args)
        .arg("--foreground")
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .context("spawning ublk add --foreground")?;
    let mut srv = FgServer {
        child,
        id: u32::MAX,
        out: out.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        if let Some(id) = parse_dev_id(&text) {
            srv.id = id;
            wait_block_node(id, Duration::from_secs(10))?;
            return Ok(srv);
        }
        if let Some(st) = srv.child.try_wait()? {
            bail!(
                "ublk add {} exited ({st}) before the device was live: {text}",
                args.join(" ")
            );
        }
        if Instant::now() > deadline {
            bail!("ublk add {}: no device within 30 s: {text}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a tool found on the host's PATH to completion.
pub fn run_tool(tool: &str, args: &[&str]) -> Result<std::process::Output> {
    let exe = find_tool(tool).ok_or_else(|| anyhow!("{tool} not found"))?;
    Command::new(&exe)
        .args(args)
        .output()
        .with_context(|| format!("running {tool}"))
}

/// Runs a tool; fails with its output unless it succeeds; returns stdout + stderr.
pub fn tool_ok(tool: &str, args: &[&str]) -> Result<String> {
    let out = run_tool(tool, args)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "{tool} {} failed ({}): {}",
            args.join(" "),
            out.status,
            text.trim()
        );
    }
    Ok(text)
}

/// `dd` copying `count` blocks of `bs` from `src` to `dst` with O_DIRECT on the device
/// side, spawned in the background.  A device is never created by it: writes to a device
/// use `conv=nocreat`, so a path that has gone fails instead of becoming a regular file.
pub fn spawn_dd(src: &str, dst: &str, bs: &str, count: u32, direct_out: bool) -> Result<Child> {
    let flag = if direct_out {
        "oflag=direct"
    } else {
        "iflag=direct"
    };
    let mut args = vec![
        format!("if={src}"),
        format!("of={dst}"),
        format!("bs={bs}"),
        format!("count={count}"),
        flag.to_string(),
        "status=none".to_string(),
    ];
    if direct_out {
        args.push("conv=nocreat".to_string());
    }
    Command::new("dd")
        .args(&args)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning dd {}", args.join(" ")))
}
