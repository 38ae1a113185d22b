//! Running QEMU: its serial console (stdout) streams live to the user and into
//! `console.log`, its stderr is shown and kept, and the timeout is enforced.
//!
//! An interactive console (`--shell`) gives QEMU our stdin and passes its output on byte
//! by byte (a prompt has no newline); the terminal's settings are restored afterwards,
//! whatever QEMU did to them.

use crate::job::MARK_START;
use crate::report::Reporter;
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::io::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct ConsoleRun {
    /// QEMU's exit status; `None` when it was killed at the timeout.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    /// From QEMU's start to its end.
    pub elapsed: Duration,
    /// From QEMU's start to init's `vmrun: start` line.
    pub first_command_at: Option<Duration>,
    /// The console, as saved in the log (lines without CR).
    pub log: String,
    /// What QEMU wrote to stderr.
    pub stderr: String,
}

/// How QEMU runs.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleOptions {
    /// Kill QEMU after this long.
    pub timeout: Option<Duration>,
    /// QEMU reads our stdin, and its output is passed on as it comes.
    pub interactive: bool,
    /// A descriptor QEMU inherits as `.1` (the scratch disk, opened as /proc/self/fd/N).
    pub pass_fd: Option<(RawFd, RawFd)>,
}

/// Puts the terminal's settings back when dropped.
struct TermRestore(Option<nix::sys::termios::Termios>);

impl TermRestore {
    fn save(interactive: bool) -> TermRestore {
        let stdin = std::io::stdin();
        TermRestore(
            interactive
                .then(|| nix::sys::termios::tcgetattr(&stdin).ok())
                .flatten(),
        )
    }
}

impl Drop for TermRestore {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let stdin = std::io::stdin();
            let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, t);
        }
    }
}

/// Runs `qemu ARGS` until it exits or the timeout passes.
pub fn run(
    qemu: &Path,
    args: &[OsString],
    log_path: &Path,
    opts: ConsoleOptions,
    reporter: Reporter,
) -> Result<ConsoleRun> {
    let mut log_file = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let start = Instant::now();
    let mut cmd = Command::new(qemu);
    cmd.args(args)
        .stdin(if opts.interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((from, to)) = opts.pass_fd {
        // SAFETY: dup2 and fcntl are async-signal-safe and touch only the child's table.
        unsafe {
            cmd.pre_exec(move || {
                if from == to {
                    if libc::fcntl(to, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let _term = TermRestore::save(opts.interactive);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let stdout = child.stdout.take().context("QEMU's stdout")?;
    let stderr = child.stderr.take().context("QEMU's stderr")?;

    let interactive = opts.interactive;
    let console = std::thread::spawn(
        move || -> (String, Option<Duration>, Option<std::io::Error>) {
            let mut reader = BufReader::new(stdout);
            let mut log = String::new();
            let mut first_command_at = None;
            let mut write_err = None;
            // The bytes of the line being read (several reads for an interactive console).
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let complete = if interactive {
                    let n = match reader.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    reporter.console_raw(&chunk[..n]);
                    buf.extend_from_slice(&chunk[..n]);
                    false
                } else {
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => true,
                    }
                };
                // Every complete line: to the log (and, unless passed on raw, the user).
                while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    let mut raw: Vec<u8> = buf.drain(..=end).collect();
                    while matches!(raw.last(), Some(b'\n' | b'\r')) {
                        raw.pop();
                    }
                    let line = String::from_utf8_lossy(&raw);
                    if first_command_at.is_none() && line.contains(MARK_START) {
                        first_command_at = Some(start.elapsed());
                    }
                    if complete {
                        reporter.console_line(&line);
                    }
                    if write_err.is_none() {
                        if let Err(e) = writeln!(log_file, "{line}") {
                            write_err = Some(e);
                        }
                    }
                    log.push_str(&line);
                    log.push('\n');
                }
            }
            if !buf.is_empty() {
                let line = String::from_utf8_lossy(&buf);
                if !interactive {
                    reporter.console_line(&line);
                }
                let _ = writeln!(log_file, "{line}");
                log.push_str(&line);
                log.push('\n');
            }
            let _ = log_file.flush();
            (log, first_command_at, write_err)
        },
    );
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let mut reader = BufReader::new(stderr);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end();
            reporter.qemu_stderr(line);
            text.push_str(line);
            text.push('\n');
            buf.clear();
        }
        text
    });

    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for QEMU")? {
            break Some(st);
        }
        if opts.timeout.is_some_and(|t| start.elapsed() >= t) {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let (log, first_command_at, write_err) = console
        .join()
        .map_err(|_| anyhow::anyhow!("the console reader panicked"))?;
    let stderr = errors
        .join()
        .map_err(|_| anyhow::anyhow!("the stderr reader panicked"))?;
    if let Some(e) = write_err {
        reporter.warn(format!("writing {}: {e}", log_path.display()));
    }
    Ok(ConsoleRun {
        status,
        timed_out,
        elapsed,
        first_command_at,
        log,
        stderr,
    })
}
