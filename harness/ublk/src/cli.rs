//! The `ublk` command line: hand-parsed (pure, unit-tested) and dispatched.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::device::{
    DeviceConfig, TargetConfig, DEFAULT_DEPTH, DEFAULT_MAX_IO_BUF_BYTES, DEFAULT_NULL_SIZE,
    DEFAULT_QUEUES,
};
use crate::uapi::*;
use zc_cliutil::parse_size;

pub const USAGE: &str = "\
usage: ublk COMMAND [OPTIONS]

A ublk server for Linux 6.1 (null, loop and mirror targets; copy mode, and
splice zero copy with the UBLK_F_SPLICE_ZC series).

commands:
  add -t loop -f FILE [OPTIONS]   create and start a device backed by FILE
                                  (a regular file or a block device)
  add -t mirror -f A -f B [OPTIONS]
                                  a device whose WRITEs go to both A and B
                                  (READs come from A; size: the smaller one)
  add -t null [-s SIZE] [OPTIONS] create and start a null device (WRITEs
                                  are dropped, READs return zeroes)
  del -n ID | -a                  stop and delete device ID, or all devices
  list                            list devices: id, state, target, backing,
                                  flags, queues
  features                        which UBLK_F_* flags the running kernel grants
  help                            this text

add options:
  -t, --type TYPE        loop, mirror or null (required)
  -f, --file FILE        backing file or block device (loop: once; mirror:
                         twice)
  -s, --size SIZE        device size for null, e.g. 512M, 1G (default 1G)
  -z, --zero-copy        splice zero copy (needs UBLK_F_SPLICE_ZC)
  -q, --queues N         hardware queues (default 1)
  -d, --depth N          queue depth, 1..4096 (default 128)
  -n, --number ID        device id (default: the first free one)
      --buffered-io      use the page cache for the backing files (loop,
                         mirror; default O_DIRECT; needed on tmpfs)
      --max-io-size SIZE largest request (default 512K)
      --foreground       serve in this process until SIGTERM/SIGINT
                         (default: detach once the device is live)

del options:
  -n, --number ID        the device
  -a, --all              every device
      --timeout SECS     how long to wait for the server to exit (default 30)

`add` prints the device id and its block device and returns once
/dev/ublkbN is live. A detached server logs to /run/ublk/ublk-server.PID.log.
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddArgs {
    pub cfg: DeviceConfig,
    pub target: TargetConfig,
    pub foreground: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelTarget {
    One(u32),
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Add(AddArgs),
    Del { which: DelTarget, timeout: Duration },
    List,
    Features,
}

fn parse_num<T: std::str::FromStr>(opt: &str, v: &str) -> Result<T> {
    v.parse::<T>()
        .map_err(|_| anyhow::anyhow!("{opt} {v:?}: not a valid number"))
}

/// Splits `args` into (option name, inline value) pairs as we go.
struct Args<'a> {
    args: &'a [String],
    i: usize,
}

impl<'a> Args<'a> {
    /// Next option: returns (name, inline value).  `-qN` and `--x=v` carry
    /// their value inline.
    fn next_opt(&mut self) -> Option<(String, Option<String>)> {
        let a = self.args.get(self.i)?;
        self.i += 1;
        if let Some(long) = a.strip_prefix("--") {
            return Some(match long.split_once('=') {
                Some((k, v)) => (format!("--{k}"), Some(v.to_string())),
                None => (a.clone(), None),
            });
        }
        if a.starts_with('-') && a.len() > 2 {
            return Some((a[..2].to_string(), Some(a[2..].to_string())));
        }
        Some((a.clone(), None))
    }

    fn value(&mut self, opt: &str, inline: Option<String>) -> Result<String> {
        if let Some(v) = inline {
            return Ok(v);
        }
        match self.args.get(self.i) {
            Some(v) => {
                self.i += 1;
                Ok(v.clone())
            }
            None => bail!("{opt} needs a value"),
        }
    }
}

fn no_value(opt: &str, inline: &Option<String>) -> Result<()> {
    if inline.is_some() {
        bail!("{opt} takes no value");
    }
    Ok(())
}

fn parse_add(rest: &[String]) -> Result<Command> {
    let mut a = Args { args: rest, i: 0 };
    let mut ty: Option<String> = None;
    let mut files: Vec<PathBuf> = Vec::new();
    let mut size: Option<u64> = None;
    let mut zero_copy = false;
    let mut queues = DEFAULT_QUEUES;
    let mut depth = DEFAULT_DEPTH;
    let mut id: Option<u32> = None;
    let mut buffered = false;
    let mut foreground = false;
    let mut max_io = DEFAULT_MAX_IO_BUF_BYTES;
    while let Some((opt, inline)) = a.next_opt() {
        match opt.as_str() {
            "-t" | "--type" => ty = Some(a.value(&opt, inline)?),
            "-f" | "--file" => files.push(PathBuf::from(a.value(&opt, inline)?)),
            "-s" | "--size" => size = Some(parse_size(&a.value(&opt, inline)?)?),
            "-z" | "--zero-copy" => {
                no_value(&opt, &inline)?;
                zero_copy = true
            }
            "-q" | "--queues" => {
                let v = a.value(&opt, inline)?;
                queues = parse_num(&opt, &v)?;
                if queues == 0 {
                    bail!("{opt} {v}: at least one queue is needed");
                }
            }
            "-d" | "--depth" => {
                let v = a.value(&opt, inline)?;
                let d: u32 = parse_num(&opt, &v)?;
                if d == 0 || d > u32::from(UBLK_MAX_QUEUE_DEPTH) {
                    bail!("{opt} {v}: queue depth must be between 1 and {UBLK_MAX_QUEUE_DEPTH}");
                }
                depth = d as u16;
            }
            "-n" | "--number" => {
                let v = a.value(&opt, inline)?;
                let n: u32 = parse_num(&opt, &v)?;
                if n >= 1 << 20 {
                    bail!("{opt} {v}: device id must be below {}", 1 << 20);
                }
                id = Some(n);
            }
            "--buffered-io" => {
                no_value(&opt, &inline)?;
                buffered = true
            }
            "--foreground" => {
                no_value(&opt, &inline)?;
                foreground = true
            }
            "--max-io-size" => {
                let v = a.value(&opt, inline)?;
                let s = parse_size(&v)?;
                if !(4096..=(1 << 30)).contains(&s) || s % 4096 != 0 {
                    bail!("{opt} {v}: must be a multiple of 4K between 4K and 1G");
                }
                max_io = s as u32;
            }
            "-h" | "--help" => return Ok(Command::Help),
            o => bail!("add: unknown option {o:?}"),
        }
    }
    let target = match ty.as_deref() {
        None => bail!("add: -t TYPE is required (loop, mirror or null)"),
        Some(t @ ("loop" | "mirror")) => {
            if size.is_some() {
                bail!("add: -s/--size is for -t null; a {t} device has its backing's size");
            }
            let mut files = files.into_iter();
            match (t, files.next(), files.next(), files.next()) {
                ("loop", None, ..) => {
                    bail!("add -t loop: -f FILE is required (the backing file or block device)")
                }
                ("loop", Some(path), None, _) => TargetConfig::Loop { path, buffered },
                ("loop", Some(_), Some(_), _) => {
                    bail!("add -t loop: give one -f FILE (two are for -t mirror)")
                }
                (_, Some(a), Some(b), None) => TargetConfig::Mirror {
                    paths: [a, b],
                    buffered,
                },
                _ => bail!("add -t mirror: give exactly two backing files, -f A -f B"),
            }
        }
        Some("null") => {
            if !files.is_empty() {
                bail!("add -t null: -f/--file is only for -t loop and -t mirror");
            }
            if buffered {
                bail!("add -t null: --buffered-io is only for -t loop and -t mirror");
            }
            let size = size.unwrap_or(DEFAULT_NULL_SIZE);
            if size < 512 {
                bail!("add -t null: size {size} is too small (at least 512 bytes)");
            }
            TargetConfig::Null { size }
        }
        Some(t) => bail!("add: unknown target type {t:?} (loop, mirror or null)"),
    };
    Ok(Command::Add(AddArgs {
        cfg: DeviceConfig {
            dev_id: id,
            nr_queues: queues,
            depth,
            zero_copy,
            max_io_buf_bytes: max_io,
            extra_flags: 0,
            unprivileged_queues: false,
        },
        target,
        foreground,
    }))
}

fn parse_del(rest: &[String]) -> Result<Command> {
    let mut a = Args { args: rest, i: 0 };
    let mut which = None;
    let mut timeout = Duration::from_secs(30);
    while let Some((opt, inline)) = a.next_opt() {
        match opt.as_str() {
            "-n" | "--number" => {
                let v = a.value(&opt, inline)?;
                let n: u32 = parse_num(&opt, &v)?;
                if which.is_some() {
                    bail!("del: give one of -n ID or -a");
                }
                which = Some(DelTarget::One(n));
            }
            "-a" | "--all" => {
                no_value(&opt, &inline)?;
                if which.is_some() {
                    bail!("del: give one of -n ID or -a");
                }
                which = Some(DelTarget::All);
            }
            "--timeout" => {
                let v = a.value(&opt, inline)?;
                timeout = Duration::from_secs(parse_num(&opt, &v)?);
            }
            "-h" | "--help" => return Ok(Command::Help),
            o => bail!("del: unknown option {o:?}"),
        }
    }
    let Some(which) = which else {
        bail!("del: -n ID or -a is required");
    };
    Ok(Command::Del { which, timeout })
}

fn no_args(cmd: &str, rest: &[String]) -> Result<()> {
    match rest.first() {
        Some(a) if a == "-h" || a == "--help" => Ok(()),
        Some(a) => bail!("{cmd}: unexpected argument {a:?}"),
        None => Ok(()),
    }
}

/// Parse the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Command> {
    let Some(cmd) = args.first() else {
        bail!("no command given");
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "add" => parse_add(rest),
        "del" | "delete" => parse_del(rest),
        "list" | "ls" => {
            no_args("list", rest)?;
            if rest.is_empty() {
                Ok(Command::List)
            } else {
                Ok(Command::Help)
            }
        }
        "features" => {
            no_args("features", rest)?;
            if rest.is_empty() {
                Ok(Command::Features)
            } else {
                Ok(Command::Help)
            }
        }
        c => bail!("unknown command {c:?}"),
    }
}

fn cmd_add(a: &AddArgs) -> Result<()> {
    // Check the input before any device or process exists.
    a.cfg.validate()?;
    drop(a.target.open()?);
    drop(crate::ctrl::Ctrl::open()?);
    let mode = if a.cfg.zero_copy { "zero copy" } else { "copy" };
    if a.foreground {
        crate::server::serve(&a.cfg, &a.target, None, |dev| {
            println!(
                "dev_id {} {} ({}, {mode})",
                dev.id(),
                dev.block_path().display(),
                a.target.kind()
            );
            use std::io::Write;
            let _ = std::io::stdout().flush();
            Ok(())
        })
    } else {
        let (id, pid, log) = crate::server::spawn_detached(&a.cfg, &a.target)?;
        println!(
            "dev_id {id} /dev/ublkb{id} ({}, {mode}; server pid {pid}, log {})",
            a.target.kind(),
            log.display()
        );
        Ok(())
    }
}

fn cmd_list() -> Result<()> {
    let devs = crate::admin::list()?;
    println!(
        "{:<4} {:<12} {:<8} {:<6} {:<32} {:<28} {:>6} {:>5} {:>7}",
        "ID", "DEVICE", "STATE", "TARGET", "BACKING", "FLAGS", "QUEUES", "DEPTH", "PID"
    );
    for d in devs {
        let (target, backing) = match &d.state {
            Some(s) => {
                let mode = if s.target == "loop" || s.target == "mirror" {
                    if s.buffered {
                        " (buffered)"
                    } else {
                        " (direct)"
                    }
                } else {
                    ""
                };
                (s.target.clone(), format!("{}{mode}", s.backing))
            }
            None => ("?".to_string(), "?".to_string()),
        };
        let pid = if d.info.ublksrv_pid > 0 {
            d.info.ublksrv_pid
        } else {
            d.state.as_ref().map(|s| s.pid).unwrap_or(-1)
        };
        println!(
            "{:<4} {:<12} {:<8} {:<6} {:<32} {:<28} {:>6} {:>5} {:>7}",
            d.id,
            format!("/dev/ublkb{}", d.id),
            state_name(d.info.state),
            target,
            backing,
            flag_names(d.info.flags),
            d.info.nr_hw_queues,
            d.info.queue_depth,
            pid
        );
    }
    Ok(())
}

fn cmd_features() -> Result<()> {
    let asked = crate::admin::all_known_flags();
    let granted = crate::admin::features()?;
    for &(bit, name) in UBLK_F_NAMES {
        let yes = if granted & bit != 0 { "yes" } else { "no" };
        println!("{name:<32} {yes}");
    }
    println!("asked {asked:#x}, granted {granted:#x}");
    Ok(())
}

fn cmd_del(which: &DelTarget, timeout: Duration) -> Result<()> {
    match which {
        DelTarget::One(id) => {
            crate::admin::delete(*id, timeout)?;
            println!("deleted dev_id {id}");
        }
        DelTarget::All => {
            for id in crate::admin::delete_all(timeout)? {
                println!("deleted dev_id {id}");
            }
        }
    }
    Ok(())
}

/// Run the CLI; returns the exit code.
pub fn main_with_args(args: &[String]) -> i32 {
    let cmd = match parse_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ublk: {e:#}");
            eprintln!("try 'ublk --help'");
            return 2;
        }
    };
    let r = match &cmd {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Add(a) => cmd_add(a),
        Command::Del { which, timeout } => cmd_del(which, *timeout),
        Command::List => cmd_list(),
        Command::Features => cmd_features(),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ublk: error: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn add(s: &str) -> AddArgs {
        match parse_args(&v(s)).unwrap() {
            Command::Add(a) => a,
            c => panic!("{c:?}"),
        }
    }

    fn err(s: &str) -> String {
        format!("{:#}", parse_args(&v(s)).unwrap_err())
    }

    #[test]
    fn add_loop_defaults() {
        let a = add("add -t loop -f /tmp/x");
        assert_eq!(
            a.target,
            TargetConfig::Loop {
                path: "/tmp/x".into(),
                buffered: false
            }
        );
        assert_eq!(a.cfg.nr_queues, 1);
        assert_eq!(a.cfg.depth, 128);
        assert!(!a.cfg.zero_copy);
        assert_eq!(a.cfg.dev_id, None);
        assert!(!a.foreground);
    }

    #[test]
    fn add_loop_everything() {
        let a = add("add -t loop -f /d -z -q 2 -d 64 --buffered-io -n 7 --foreground");
        assert_eq!(
            a.target,
            TargetConfig::Loop {
                path: "/d".into(),
                buffered: true
            }
        );
        assert!(a.cfg.zero_copy && a.foreground);
        assert_eq!(
            (a.cfg.nr_queues, a.cfg.depth, a.cfg.dev_id),
            (2, 64, Some(7))
        );
        let b = add("add --type=loop --file=/d --zero-copy --queues=2 --depth=64 --buffered-io --number=7 --foreground");
        assert_eq!(a, b);
        let c = add("add -tloop -f/d -z -q2 -d64 --buffered-io -n7 --foreground");
        assert_eq!(a, c);
    }

    #[test]
    fn add_null() {
        let a = add("add -t null -s 256M");
        assert_eq!(a.target, TargetConfig::Null { size: 256 << 20 });
        let a = add("add -t null -z");
        assert_eq!(a.target, TargetConfig::Null { size: 1 << 30 });
        assert!(a.cfg.zero_copy);
    }

    #[test]
    fn add_mirror() {
        let a = add("add -t mirror -f /a -f /b -z --buffered-io");
        assert_eq!(
            a.target,
            TargetConfig::Mirror {
                paths: ["/a".into(), "/b".into()],
                buffered: true
            }
        );
        assert!(a.cfg.zero_copy);
    }

    #[rstest]
    #[case("add -t loop", "-f FILE is required")]
    #[case("add -t loop -f /a -f /b", "two are for -t mirror")]
    #[case("add -t mirror -f /a", "exactly two")]
    #[case("add -t mirror -f /a -f /b -f /c", "exactly two")]
    #[case("add -t mirror -f /a -f /b -s 1G", "for -t null")]
    #[case("add -f /x", "-t TYPE is required")]
    #[case("add -t foo", "unknown target type")]
    #[case("add -t loop -f /x -d 5000", "between 1 and 4096")]
    #[case("add -t loop -f /x -d 0", "between 1 and 4096")]
    #[case("add -t loop -f /x -d -3", "not a valid number")]
    #[case("add -t loop -f /x -q 0", "at least one queue")]
    #[case("add -t loop -f /x -q", "needs a value")]
    #[case("add -t loop -f /x -s 1G", "for -t null")]
    #[case("add -t null -f /x", "only for -t loop")]
    #[case("add -t null --buffered-io", "only for -t loop")]
    #[case("add -t null -s 12Q", "unknown suffix")]
    #[case("add -t null -s 100", "too small")]
    #[case("add -t loop -f /x --bogus", "unknown option")]
    #[case("add -t loop -f /x -z=1", "takes no value")]
    #[case("add -t loop -f /x -n 99999999", "below")]
    #[case("add -t loop -f /x --max-io-size 1000", "multiple of 4K")]
    #[case("del", "-n ID or -a is required")]
    #[case("del -n 1 -a", "one of")]
    #[case("del -n x", "not a valid number")]
    #[case("frob", "unknown command")]
    #[case("list extra", "unexpected argument")]
    #[case("", "no command")]
    fn bad_input(#[case] args: &str, #[case] msg: &str) {
        let e = err(args);
        assert!(e.contains(msg), "{args:?}: {e:?} lacks {msg:?}");
    }

    #[test]
    fn del_list_features_help() {
        assert_eq!(
            parse_args(&v("del -n 3")).unwrap(),
            Command::Del {
                which: DelTarget::One(3),
                timeout: Duration::from_secs(30)
            }
        );
        assert_eq!(
            parse_args(&v("del -a --timeout 5")).unwrap(),
            Command::Del {
                which: DelTarget::All,
                timeout: Duration::from_secs(5)
            }
        );
        assert_eq!(parse_args(&v("list")).unwrap(), Command::List);
        assert_eq!(parse_args(&v("features")).unwrap(), Command::Features);
        assert_eq!(parse_args(&v("--help")).unwrap(), Command::Help);
        assert_eq!(parse_args(&v("add --help")).unwrap(), Command::Help);
        assert_eq!(parse_args(&v("list -h")).unwrap(), Command::Help);
    }
}
