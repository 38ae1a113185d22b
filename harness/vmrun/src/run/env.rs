//! The command's environment in the guest: only what is named passes from the host, so
//! that a run does not depend on whoever started it.

use crate::job::{guest_results_dir, GUEST_SCRATCH_DISK, GUEST_SHIM_DIR};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Host variables the command gets as they are, besides those named `VMRUN_*` and `UBLK_*`.
const PASSED_VARS: &[&str] = &[
    "LANG",
    "LC_ALL",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "RUST_LIB_BACKTRACE",
];

/// The command's environment in the guest. A shell gets the host's TERM and the
/// `poweroff` of [`GUEST_SHIM_DIR`] first in its PATH.
pub fn guest_env(
    host: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[(OsString, OsString)],
    scratch_disk: bool,
    shell: bool,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut path = None;
    let mut term = None;
    for (k, v) in host {
        let name = k.to_string_lossy();
        if name == "PATH" {
            path = Some(v);
        } else if name == "TERM" {
            term = Some(v).filter(|t| !t.is_empty() && t != "dumb");
        } else if PASSED_VARS.contains(&name.as_ref())
            || ((name.starts_with("VMRUN_") || name.starts_with("UBLK_"))
                && name != "VMRUN_RESULTS")
        {
            env.push((k, v));
        }
    }
    // root's tools (mkfs, losetup) live in sbin, which a user's PATH may lack.
    let mut dirs: Vec<PathBuf> = path
        .as_deref()
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_else(|| {
            ["/usr/local/bin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from)
                .collect()
        });
    for sbin in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|d| d == Path::new(sbin)) {
            dirs.push(sbin.into());
        }
    }
    if shell {
        dirs.insert(0, GUEST_SHIM_DIR.into());
    }
    let path =
        std::env::join_paths(dirs).unwrap_or_else(|_| "/usr/bin:/bin:/usr/sbin:/sbin".into());
    env.push(("PATH".into(), path));
    for (k, v) in [("HOME", "/tmp"), ("USER", "root"), ("LOGNAME", "root")] {
        env.push((k.into(), v.into()));
    }
    let term = match (shell, term) {
        (true, Some(t)) => t,
        (true, None) => "vt100".into(),
        (false, _) => "dumb".into(),
    };
    env.push(("TERM".into(), term));
    env.push(("VMRUN_RESULTS".into(), guest_results_dir().into()));
    if scratch_disk {
        env.push(("VMRUN_SCRATCH_DISK".into(), GUEST_SCRATCH_DISK.into()));
    }
    // --env last; a later value replaces an earlier one.
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_map(env: &[(OsString, OsString)]) -> std::collections::HashMap<String, String> {
        env.iter()
            .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
            .collect()
    }

    #[test]
    fn environment() {
        let host = [
            ("PATH", "/home/u/bin:/usr/bin:/bin"),
            ("SECRET_TOKEN", "x"),
            ("RUST_BACKTRACE", "1"),
            ("UBLK_TEST_DEPTH", "64"),
            ("VMRUN_RESULTS", "/host/wrong"),
            ("HOME", "/home/u"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let extra = [
            (OsString::from("HOME"), OsString::from("/root")),
            (OsString::from("A"), OsString::from("b")),
        ];
        let env = guest_env(host, &extra, true, false);
        let m = env_map(&env);
        assert_eq!(
            m["PATH"],
            "/home/u/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
        );
        assert!(!m.contains_key("SECRET_TOKEN"));
        assert_eq!(m["RUST_BACKTRACE"], "1");
        assert_eq!(m["UBLK_TEST_DEPTH"], "64");
        assert_eq!(m["VMRUN_RESULTS"], "/run/vmrun/results");
        assert_eq!(m["VMRUN_SCRATCH_DISK"], "/dev/vda");
        assert_eq!(m["HOME"], "/root", "--env overrides");
        assert_eq!(m["A"], "b");
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);

        let m = env_map(&guest_env(Vec::new(), &[], false, false));
        assert_eq!(m["HOME"], "/tmp");
        assert!(m["PATH"].contains("/usr/sbin"));
        assert!(!m.contains_key("VMRUN_SCRATCH_DISK"));
    }

    #[test]
    fn shell_environment() {
        let host = [("PATH", "/usr/bin:/bin"), ("TERM", "xterm-256color")]
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let m = env_map(&guest_env(host.clone(), &[], false, true));
        assert_eq!(m["TERM"], "xterm-256color");
        assert_eq!(
            m["PATH"],
            "/run/vmrun-bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
        );
        // A command keeps TERM=dumb and the PATH without the shims.
        let m = env_map(&guest_env(host, &[], false, false));
        assert_eq!(m["TERM"], "dumb");
        assert!(!m["PATH"].contains("vmrun-bin"));
        // A shell without a usable host TERM gets vt100.
        let dumb = [(OsString::from("TERM"), OsString::from("dumb"))];
        assert_eq!(env_map(&guest_env(dumb, &[], false, true))["TERM"], "vt100");
    }
}
