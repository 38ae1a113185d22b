//! `gate run`'s command line: its options, the environment every step sees (the lane,
//! the revision, as scripts/lib.sh's series_opt sets it), and the revision through lib.sh.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::run::{Gate, Revision};
use crate::steps::{self, Ctx, Lane};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Gate another revision: a directory with a quilt `series` file, or one mbox (git
    /// format-patch --stdout, b4 am; the cover letter is skipped). Default: patches/.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["tree", "range"])]
    pub series: Option<PathBuf>,
    /// With --range: gate the commits A..B of your kernel git tree (no merges).
    #[arg(long, value_name = "DIR", requires = "range")]
    pub tree: Option<PathBuf>,
    /// With --tree: the commits, A..B (a range with a merge commit is refused).
    #[arg(long, value_name = "A..B", requires = "tree")]
    pub range: Option<String>,
    /// The fast lane (the default when CI=true; or ZC_LANE=fast): the whole kernel is
    /// built only after the last patch of the bisect walk.
    #[arg(long, overrides_with = "full")]
    pub fast: bool,
    /// The full lane (the default outside CI).
    #[arg(long, overrides_with = "fast")]
    pub full: bool,
    /// Only the steps whose names start with a PREFIX (e.g. "rust:" "series:"); steps a
    /// selected one needs are not added by themselves.
    #[arg(value_name = "PREFIX")]
    pub filters: Vec<String>,
}

/// The revision through scripts/lib.sh (series_resolve, series_describe).
struct ShellRevision {
    top: PathBuf,
}

impl ShellRevision {
    fn bash(&self, script: &str) -> std::process::Command {
        let mut c = std::process::Command::new("bash");
        c.arg("-c")
            .arg(format!(". \"$0/scripts/lib.sh\" && {script}"))
            .arg(&self.top);
        c
    }
}

impl Revision for ShellRevision {
    fn resolve(&mut self) -> Result<String> {
        let out = self
            .bash(r#"series_resolve >&2 && printf '%s\n%s\n' "$ZC_SERIES_DIR" "$ZC_SERIES_ORIGIN""#)
            .stderr(std::process::Stdio::null())
            .output()
            .context("running series_resolve")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let (Some(dir), Some(origin), true) = (lines.next(), lines.next(), out.status.success())
        else {
            bail!("series_resolve failed");
        };
        // The revision for every step after this one, as test.sh exported it.
        std::env::set_var("ZC_SERIES_DIR", dir);
        std::env::set_var("ZC_SERIES_ORIGIN", origin);
        Ok(origin.to_string())
    }

    fn describe(&self, readable: bool) -> String {
        if readable {
            return self
                .bash("series_describe 2>/dev/null")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
        }
        let v = |k: &str| std::env::var(k).unwrap_or_default();
        let src = v("ZC_SERIES_SRC");
        let what = if src.is_empty() {
            format!("{} {}", v("ZC_SERIES_TREE"), v("ZC_SERIES_RANGE"))
        } else {
            src
        };
        format!("revision: unreadable: {what}\n")
    }
}

fn top_dir() -> PathBuf {
    match std::env::var_os("ZC_TOP").filter(|v| !v.is_empty()) {
        Some(t) => t.into(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !s.is_empty()).then_some(s)
}

/// The revision options, into the environment every step sees (lib.sh's series_opt).
fn revision_options(a: &RunArgs) -> Result<()> {
    if let Some(p) = &a.series {
        if !p.exists() {
            bail!("--series {}: no such file or directory", p.display());
        }
        let p = std::fs::canonicalize(p).with_context(|| format!("--series {}", p.display()))?;
        std::env::set_var("ZC_SERIES_SRC", p);
    }
    if let Some(t) = &a.tree {
        if !t.is_dir() {
            bail!("--tree {}: no such directory", t.display());
        }
        let t = std::fs::canonicalize(t).with_context(|| format!("--tree {}", t.display()))?;
        std::env::set_var("ZC_SERIES_TREE", t);
    }
    if let Some(r) = &a.range {
        if r.is_empty() {
            bail!("--range needs a value");
        }
        std::env::set_var("ZC_SERIES_RANGE", r);
    }
    if a.series.is_some() || a.tree.is_some() {
        std::env::remove_var("ZC_SERIES_DIR");
        std::env::remove_var("ZC_SERIES_ORIGIN");
    }
    Ok(())
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    revision_options(&a)?;
    let flag = match (a.fast, a.full) {
        (true, _) => Some(Lane::Fast),
        (_, true) => Some(Lane::Full),
        _ => None,
    };
    let var = |k: &str| std::env::var(k).ok();
    let lane = steps::lane(flag, var("ZC_LANE").as_deref(), var("CI").as_deref())?;
    std::env::set_var("ZC_LANE", lane.as_str());
    let top = std::fs::canonicalize(top_dir()).context("the checkout (ZC_TOP)")?;
    let cache = steps::cache_dir();
    let report = match std::env::var_os("ZC_REPORT_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => top.join("results/gate"),
    };
    let ctx = Ctx {
        top: top.clone(),
        cache: cache.clone(),
        lane,
        gate: std::env::current_exe().context("finding the gate's own executable")?,
    };
    // scripts/lib.sh's ZC_PINNED_PKG and ZC_MEASURED_VERSION
    let lib = output(
        "bash",
        &[
            "-c",
            ". \"$0/scripts/lib.sh\" && printf '%s\\n%s\\n' \"$ZC_PINNED_PKG\" \"$ZC_MEASURED_VERSION\"",
            &top.to_string_lossy(),
        ],
    )
    .unwrap_or_default();
    let mut lib = lib.lines();
    let pkg = lib.next().unwrap_or("linux-source-6.1").to_string();
    let measured = lib.next().unwrap_or("").to_string();
    let installed = output("dpkg-query", &["-W", "-f=${Version}", &pkg])
        .unwrap_or_else(|| "not installed".into());
    let cpus = output("nproc", &[]).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or("?".into(), |n| n.to_string())
    });
    let g = Gate {
        steps: steps::gate_steps(&ctx),
        filters: a.filters,
        logs: cache.join("test-logs"),
        report,
        lane: lane.as_str().to_string(),
        meta: vec![
            ("installed".into(), format!("{pkg} {installed}")),
            ("measured".into(), measured),
            ("kernel_src".into(), var("KERNEL_SRC").unwrap_or_default()),
            ("cpus".into(), cpus),
        ],
        cwd: top.clone(),
    };
    std::fs::create_dir_all(ctx.runs()).context("creating the runs' directory")?;
    let mut rev = ShellRevision { top };
    let sum = g.run(&mut rev, &mut std::io::stdout(), &mut std::io::stderr())?;
    Ok(if sum.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
