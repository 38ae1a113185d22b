//! The `ublk` command line: parsed with clap (derive), checked (pure, unit-tested) and
//! dispatched.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::error::ErrorKind;
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand};

use crate::device::{DeviceConfig, TargetConfig, DEFAULT_DEPTH, DEFAULT_NULL_SIZE, DEFAULT_QUEUES};
use crate::uapi::*;
use crate::validate;

const AFTER_HELP: &str = "\
Commands in short:
  ublk add -t loop -f FILE [OPTIONS]         a device backed by FILE (a regular file or a
                                             block device)
  ublk add -t mirror -f A -f B [OPTIONS]     WRITEs go to both A and B, READs come from A;
                                             the size is the smaller one's
  ublk add -t null [-s SIZE] [OPTIONS]       WRITEs are dropped, READs return zeroes
  ublk del -n ID | -a [--timeout SECS]
  ublk list
  ublk features

`ublk add` prints the device id and its block device and returns once /dev/ublkbN is
live. A detached server logs to /run/ublk/ublk-server.PID.log.
See `ublk add --help` and `ublk del --help` for the options.";

/// A ublk server for Linux 6.1 (null, loop and mirror targets; copy mode, and splice
/// zero copy with the UBLK_F_SPLICE_ZC series).
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "ublk",
    subcommand_required = true,
    arg_required_else_help = true,
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum CliCommand {
    /// Create and start a device (loop, mirror or null).
    ///
    /// Prints `dev_id N /dev/ublkbN (...)` and returns once /dev/ublkbN is live; the
    /// server then runs detached (logging to /run/ublk/ublk-server.PID.log), or in this
    /// process with --foreground.
    #[command(override_usage = "ublk add -t loop -f FILE [OPTIONS]\n       \
                                ublk add -t mirror -f A -f B [OPTIONS]\n       \
                                ublk add -t null [-s SIZE] [OPTIONS]")]
    Add(AddOpts),
    /// Stop and delete a device, or all devices.
    #[command(visible_alias = "delete")]
    Del(DelOpts),
    /// List devices: id, state, target, backing, flags, queues.
    #[command(visible_alias = "ls")]
    List,
    /// Which UBLK_F_* flags the running kernel grants.
    Features,
}

/// The target type of `add -t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    Loop,
    Mirror,
    Null,
}

impl fmt::Display for TargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetType::Loop => "loop",
            TargetType::Mirror => "mirror",
            TargetType::Null => "null",
        })
    }
}

/// Options of `ublk add`, as given (checked by [`AddOpts::into_add_args`]).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct AddOpts {
    /// The target: loop (a file or block device), mirror (two of them) or null.
    #[arg(short = 't', long = "type", value_name = "TYPE", value_parser = parse_target_type)]
    pub target: TargetType,

    /// Backing file or block device (loop: once; mirror: twice, -f A -f B).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Device size, for null only: bytes, or with a K/M/G/T suffix, e.g. 512M, 1G
    /// [default: 1G].
    #[arg(short = 's', long, value_name = "SIZE", value_parser = zc_cliutil::size_arg)]
    pub size: Option<u64>,

    /// Splice zero copy (needs UBLK_F_SPLICE_ZC, which the series adds).
    #[arg(short = 'z', long)]
    pub zero_copy: bool,

    /// Hardware queues.
    #[arg(short = 'q', long, value_name = "N", default_value_t = DEFAULT_QUEUES,
          value_parser = parse_queues, allow_negative_numbers = true)]
    pub queues: u16,

    /// Queue depth, 1..4096.
    #[arg(short = 'd', long, value_name = "N", default_value_t = DEFAULT_DEPTH,
          value_parser = parse_depth, allow_negative_numbers = true)]
    pub depth: u16,

    /// Device id, below 1048576 [default: the first free one].
    #[arg(short = 'n', long, value_name = "ID", value_parser = parse_dev_id,
          allow_negative_numbers = true)]
    pub number: Option<u32>,

    /// Use the page cache for the backing files (loop, mirror) instead of O_DIRECT;
    /// needed on tmpfs.
    #[arg(long)]
    pub buffered_io: bool,

    /// Largest request: a multiple of 4K between 4K and 1G (K/M/G suffixes as for
    /// --size).
    #[arg(long, value_name = "SIZE", default_value = "512K", value_parser = parse_max_io)]
    pub max_io_size: u32,

    /// Serve in this process until SIGTERM/SIGINT (default: detach once the device is
    /// live).
    #[arg(long)]
    pub foreground: bool,
}

/// Options of `ublk del`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["number", "all"])))]
pub struct DelOpts {
    /// The device to stop and delete.
    #[arg(short = 'n', long, value_name = "ID", value_parser = parse_u32,
          allow_negative_numbers = true)]
    pub number: Option<u32>,

    /// Every device.
    #[arg(short = 'a', long)]
    pub all: bool,

    /// How long to wait for the server to exit, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = parse_u64,
          allow_negative_numbers = true)]
    pub timeout: u64,
}

fn parse_target_type(s: &str) -> Result<TargetType, String> {
    match s {
        "loop" => Ok(TargetType::Loop),
        "mirror" => Ok(TargetType::Mirror),
        "null" => Ok(TargetType::Null),
        _ => Err(format!("unknown target type {s:?} (loop, mirror or null)")),
    }
}

fn parse_u32(s: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a valid number"))
}

fn parse_u64(s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a valid number"))
}

// The rules are crate::validate's; these only parse.

fn parse_queues(s: &str) -> Result<u16, String> {
    let n = s
        .parse::<u16>()
        .map_err(|_| format!("{s:?} is not a valid number"))?;
    validate::queues(n)
}

fn parse_depth(s: &str) -> Result<u16, String> {
    validate::depth(parse_u32(s)?)
}

fn parse_dev_id(s: &str) -> Result<u32, String> {
    validate::dev_id(parse_u32(s)?)
}

fn parse_max_io(s: &str) -> Result<u32, String> {
    validate::max_io(zc_cliutil::size_arg(s)?)
}

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

/// A command, checked and ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Add(AddArgs),
    Del { which: DelTarget, timeout: Duration },
    List,
    Features,
}

/// A usage error of subcommand `sub`, rendered like clap's own (with its usage line and
/// the pointer to --help; exit status 2).
fn usage_error(sub: &str, kind: ErrorKind, msg: impl fmt::Display) -> clap::Error {
    let mut cmd = Cli::command();
    cmd.build();
    match cmd.find_subcommand_mut(sub) {
        Some(s) => s.error(kind, msg),
        None => cmd.error(kind, msg),
    }
}

impl AddOpts {
    /// Checks what clap cannot check alone (which options go with which target).
    pub fn into_add_args(self) -> Result<AddArgs, clap::Error> {
        let err = |kind, msg: String| usage_error("add", kind, msg);
        let AddOpts {
            target: ty,
            files,
            size,
            buffered_io: buffered,
            ..
        } = self;
        let target =
            match ty {
                TargetType::Loop | TargetType::Mirror => {
                    if size.is_some() {
                        return Err(err(
                            ErrorKind::ArgumentConflict,
                            format!(
                            "add: -s/--size is for -t null; a {ty} device has its backing's size"
                        ),
                        ));
                    }
                    let mut files = files.into_iter();
                    match (ty, files.next(), files.next(), files.next()) {
                        (TargetType::Loop, None, ..) => return Err(err(
                            ErrorKind::MissingRequiredArgument,
                            "add -t loop: -f FILE is required (the backing file or block device)"
                                .into(),
                        )),
                        (TargetType::Loop, Some(path), None, _) => {
                            TargetConfig::Loop { path, buffered }
                        }
                        (TargetType::Loop, Some(_), Some(_), _) => {
                            return Err(err(
                                ErrorKind::TooManyValues,
                                "add -t loop: give one -f FILE (two are for -t mirror)".into(),
                            ))
                        }
                        (_, Some(a), Some(b), None) => TargetConfig::Mirror {
                            paths: [a, b],
                            buffered,
                        },
                        _ => {
                            return Err(err(
                                ErrorKind::WrongNumberOfValues,
                                "add -t mirror: give exactly two backing files, -f A -f B".into(),
                            ))
                        }
                    }
                }
                TargetType::Null => {
                    if !files.is_empty() {
                        return Err(err(
                            ErrorKind::ArgumentConflict,
                            "add -t null: -f/--file is only for -t loop and -t mirror".into(),
                        ));
                    }
                    if buffered {
                        return Err(err(
                            ErrorKind::ArgumentConflict,
                            "add -t null: --buffered-io is only for -t loop and -t mirror".into(),
                        ));
                    }
                    let size = size.unwrap_or(DEFAULT_NULL_SIZE);
                    if let Err(e) = validate::null_size(size) {
                        return Err(err(ErrorKind::ValueValidation, format!("add -t null: {e}")));
                    }
                    TargetConfig::Null { size }
                }
            };
        Ok(AddArgs {
            cfg: DeviceConfig {
                dev_id: self.number,
                nr_queues: self.queues,
                depth: self.depth,
                zero_copy: self.zero_copy,
                max_io_buf_bytes: self.max_io_size,
                extra_flags: 0,
                unprivileged_queues: false,
            },
            target,
            foreground: self.foreground,
        })
    }
}

impl CliCommand {
    /// The command to run, once checked.
    pub fn into_command(self) -> Result<Command, clap::Error> {
        Ok(match self {
            CliCommand::Add(a) => Command::Add(a.into_add_args()?),
            CliCommand::Del(d) => Command::Del {
                // The group "which" makes clap insist on exactly one of the two.
                which: match d.number {
                    Some(n) => DelTarget::One(n),
                    None => DelTarget::All,
                },
                timeout: Duration::from_secs(d.timeout),
            },
            CliCommand::List => Command::List,
            CliCommand::Features => Command::Features,
        })
    }
}

/// Parses and checks a command line (`args` starts with the program name).  `--help`
/// and usage errors are a `clap::Error` (print it; its exit code is 0 for help, else 2).
pub fn parse_args<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Cli::try_parse_from(args)?.command.into_command()
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

/// Runs the CLI on `args` (the program name first); returns the exit code: 0, 1 when the
/// command failed, 2 for bad usage (0 for --help).
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cmd = match parse_args(args) {
        Ok(c) => c,
        Err(e) => {
            // Help to stdout, errors to stderr.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let r = match &cmd {
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
    use crate::device::DEFAULT_MAX_IO_BUF_BYTES;
    use rstest::rstest;

    fn v(s: &str) -> Vec<String> {
        std::iter::once("ublk")
            .chain(s.split_whitespace())
            .map(String::from)
            .collect()
    }

    fn add(s: &str) -> AddArgs {
        match parse_args(v(s)).unwrap() {
            Command::Add(a) => a,
            c => panic!("{c:?}"),
        }
    }

    /// The error as the user sees it (without colors).
    fn err(s: &str) -> (ErrorKind, String) {
        let e = parse_args(v(s)).unwrap_err();
        (e.kind(), text(&e))
    }

    /// What the user sees (without colors), with every run of white space as one space,
    /// so that the terminal's width (help and errors are wrapped to it) does not matter.
    fn text(e: &clap::Error) -> String {
        e.render()
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert()
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
        assert_eq!(a.cfg.nr_queues, DEFAULT_QUEUES);
        assert_eq!(a.cfg.nr_queues, 1);
        assert_eq!(a.cfg.depth, 128);
        assert_eq!(a.cfg.max_io_buf_bytes, DEFAULT_MAX_IO_BUF_BYTES);
        assert!(!a.cfg.zero_copy);
        assert_eq!(a.cfg.dev_id, None);
        assert!(!a.foreground);
    }

    #[test]
    fn add_loop_everything() {
        let a =
            add("add -t loop -f /d -z -q 2 -d 64 --buffered-io -n 7 --foreground --max-io-size 1M");
        assert_eq!(
            a.target,
            TargetConfig::Loop {
                path: "/d".into(),
                buffered: true
            }
        );
        assert!(a.cfg.zero_copy && a.foreground);
        assert_eq!(
            (
                a.cfg.nr_queues,
                a.cfg.depth,
                a.cfg.dev_id,
                a.cfg.max_io_buf_bytes
            ),
            (2, 64, Some(7), 1 << 20)
        );
        let b = add("add --type=loop --file=/d --zero-copy --queues=2 --depth=64 --buffered-io --number=7 --foreground --max-io-size=1024K");
        assert_eq!(a, b);
        let c = add("add -tloop -f/d -z -q2 -d64 --buffered-io -n7 --foreground --max-io-size 1M");
        assert_eq!(a, c);
        let d =
            add("add --foreground --max-io-size 1M -n 7 --buffered-io -d 64 -q 2 -z -f /d -t loop");
        assert_eq!(a, d, "options come in any order");
    }

    #[test]
    fn add_null() {
        let a = add("add -t null -s 256M");
        assert_eq!(a.target, TargetConfig::Null { size: 256 << 20 });
        let a = add("add -t null -z");
        assert_eq!(a.target, TargetConfig::Null { size: 1 << 30 });
        assert!(a.cfg.zero_copy);
        let a = add("add -t null --size=4096");
        assert_eq!(a.target, TargetConfig::Null { size: 4096 });
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
    #[case(
        "add -t loop",
        ErrorKind::MissingRequiredArgument,
        "-f FILE is required"
    )]
    #[case(
        "add -t loop -f /a -f /b",
        ErrorKind::TooManyValues,
        "two are for -t mirror"
    )]
    #[case("add -t mirror -f /a", ErrorKind::WrongNumberOfValues, "exactly two")]
    #[case(
        "add -t mirror -f /a -f /b -f /c",
        ErrorKind::WrongNumberOfValues,
        "exactly two"
    )]
    #[case(
        "add -t mirror -f /a -f /b -s 1G",
        ErrorKind::ArgumentConflict,
        "for -t null"
    )]
    #[case("add -f /x", ErrorKind::MissingRequiredArgument, "--type <TYPE>")]
    #[case("add", ErrorKind::MissingRequiredArgument, "--type <TYPE>")]
    #[case(
        "add -t foo",
        ErrorKind::ValueValidation,
        "unknown target type \"foo\""
    )]
    #[case("add -t nbd", ErrorKind::ValueValidation, "unknown target type")]
    #[case(
        "add -t",
        ErrorKind::InvalidValue,
        "a value is required for '--type <TYPE>'"
    )]
    #[case(
        "add -t loop -f /x -d 5000",
        ErrorKind::ValueValidation,
        "between 1 and 4096"
    )]
    #[case(
        "add -t loop -f /x -d 0",
        ErrorKind::ValueValidation,
        "between 1 and 4096"
    )]
    #[case(
        "add -t loop -f /x -d -3",
        ErrorKind::ValueValidation,
        "not a valid number"
    )]
    #[case(
        "add -t loop -f /x -d x",
        ErrorKind::ValueValidation,
        "for '--depth <N>'"
    )]
    #[case(
        "add -t loop -f /x -q 0",
        ErrorKind::ValueValidation,
        "at least one queue"
    )]
    #[case(
        "add -t loop -f /x -q 70000",
        ErrorKind::ValueValidation,
        "not a valid number"
    )]
    #[case(
        "add -t loop -f /x -q",
        ErrorKind::InvalidValue,
        "a value is required for '--queues <N>'"
    )]
    #[case("add -t loop -f /x -s 1G", ErrorKind::ArgumentConflict, "for -t null")]
    #[case("add -t null -f /x", ErrorKind::ArgumentConflict, "only for -t loop")]
    #[case(
        "add -t null --buffered-io",
        ErrorKind::ArgumentConflict,
        "only for -t loop"
    )]
    #[case("add -t null -s 12Q", ErrorKind::ValueValidation, "unknown suffix")]
    #[case(
        "add -t null -s 12Q",
        ErrorKind::ValueValidation,
        "invalid value '12Q' for '--size <SIZE>'"
    )]
    #[case("add -t null -s 99999999999T", ErrorKind::ValueValidation, "too large")]
    #[case("add -t null -s 100", ErrorKind::ValueValidation, "too small")]
    #[case(
        "add -t loop -f /x --bogus",
        ErrorKind::UnknownArgument,
        "unexpected argument '--bogus'"
    )]
    #[case(
        "add -t loop -f /x --foregrund",
        ErrorKind::UnknownArgument,
        "similar argument exists: '--foreground'"
    )]
    #[case(
        "add -t loop -f /x -z=1",
        ErrorKind::UnknownArgument,
        "unexpected argument '-=' found"
    )]
    #[case(
        "add -t loop -f /x --zero-copy=1",
        ErrorKind::TooManyValues,
        "unexpected value '1' for '--zero-copy'"
    )]
    #[case(
        "add -t loop -f /x -n 99999999",
        ErrorKind::ValueValidation,
        "below 1048576"
    )]
    #[case(
        "add -t loop -f /x --max-io-size 1000",
        ErrorKind::ValueValidation,
        "multiple of 4K"
    )]
    #[case(
        "add -t loop -f /x --max-io-size 2G",
        ErrorKind::ValueValidation,
        "multiple of 4K"
    )]
    #[case(
        "add -t loop -f /x --max-io-size 1Z",
        ErrorKind::ValueValidation,
        "for '--max-io-size <SIZE>': bad size"
    )]
    #[case("del", ErrorKind::MissingRequiredArgument, "<--number <ID>|--all>")]
    #[case("del -n 1 -a", ErrorKind::ArgumentConflict, "cannot be used with")]
    #[case("del -n x", ErrorKind::ValueValidation, "not a valid number")]
    #[case(
        "del -a --timeout soon",
        ErrorKind::ValueValidation,
        "for '--timeout <SECS>'"
    )]
    #[case("del -a -z", ErrorKind::UnknownArgument, "unexpected argument '-z'")]
    #[case("frob", ErrorKind::InvalidSubcommand, "unrecognized subcommand 'frob'")]
    #[case(
        "list extra",
        ErrorKind::UnknownArgument,
        "unexpected argument 'extra'"
    )]
    #[case(
        "features --all",
        ErrorKind::UnknownArgument,
        "unexpected argument '--all'"
    )]
    #[case("--bogus", ErrorKind::UnknownArgument, "unexpected argument '--bogus'")]
    fn bad_input(#[case] args: &str, #[case] kind: ErrorKind, #[case] msg: &str) {
        let (k, e) = err(args);
        assert!(e.contains(msg), "{args:?}: {e:?} lacks {msg:?}");
        assert_eq!(k, kind, "{args:?}: {e}");
        // Every usage error points to the help, and exits 2.
        assert!(e.contains("--help"), "{args:?}: {e}");
        assert_eq!(parse_args(v(args)).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn checks_name_the_subcommand_in_the_usage() {
        let (_, e) = err("add -t loop");
        assert!(e.contains("Usage: ublk add"), "{e}");
    }

    #[test]
    fn no_command_is_the_help_and_fails() {
        let e = parse_args(v("")).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn del_list_features() {
        assert_eq!(
            parse_args(v("del -n 3")).unwrap(),
            Command::Del {
                which: DelTarget::One(3),
                timeout: Duration::from_secs(30)
            }
        );
        assert_eq!(
            parse_args(v("delete --number=3 --timeout=7")).unwrap(),
            Command::Del {
                which: DelTarget::One(3),
                timeout: Duration::from_secs(7)
            }
        );
        assert_eq!(
            parse_args(v("del -a --timeout 5")).unwrap(),
            Command::Del {
                which: DelTarget::All,
                timeout: Duration::from_secs(5)
            }
        );
        assert_eq!(
            parse_args(v("del --all")).unwrap(),
            Command::Del {
                which: DelTarget::All,
                timeout: Duration::from_secs(30)
            }
        );
        assert_eq!(parse_args(v("list")).unwrap(), Command::List);
        assert_eq!(parse_args(v("ls")).unwrap(), Command::List);
        assert_eq!(parse_args(v("features")).unwrap(), Command::Features);
    }

    #[rstest]
    #[case("--help")]
    #[case("-h")]
    #[case("help")]
    #[case("help add")]
    #[case("add --help")]
    #[case("add -t loop -h")]
    #[case("del -h")]
    #[case("delete --help")]
    #[case("list -h")]
    #[case("ls --help")]
    #[case("features --help")]
    fn help_exits_0(#[case] args: &str) {
        let e = parse_args(v(args)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
        assert_eq!(e.exit_code(), 0, "{args:?}");
    }

    #[test]
    fn help_lists_every_option() {
        let top = parse_args(v("--help")).unwrap_err();
        let top = text(&top);
        for want in [
            "add",
            "del",
            "list",
            "features",
            "delete",
            "ls",
            "UBLK_F_SPLICE_ZC",
            "ublk add -t mirror -f A -f B",
            "/run/ublk/ublk-server.PID.log",
        ] {
            assert!(top.contains(want), "{want:?} not in:\n{top}");
        }
        let add = text(&parse_args(v("add --help")).unwrap_err());
        for want in [
            "-t, --type <TYPE>",
            "loop (a file or block device), mirror (two of them) or null",
            "-f, --file <FILE>",
            "-s, --size <SIZE>",
            "[default: 1G]",
            "-z, --zero-copy",
            "-q, --queues <N>",
            "[default: 1]",
            "-d, --depth <N>",
            "[default: 128]",
            "-n, --number <ID>",
            "--buffered-io",
            "--max-io-size <SIZE>",
            "[default: 512K]",
            "--foreground",
        ] {
            assert!(add.contains(want), "{want:?} not in:\n{add}");
        }
        let del = text(&parse_args(v("del --help")).unwrap_err());
        for want in [
            "-n, --number <ID>",
            "-a, --all",
            "--timeout <SECS>",
            "[default: 30]",
        ] {
            assert!(del.contains(want), "{want:?} not in:\n{del}");
        }
    }
}
