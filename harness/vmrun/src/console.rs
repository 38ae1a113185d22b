//! Running QEMU: its serial console (stdout) streams live to the user and into
//! `console.log`, its stderr is shown and kept, and the timeout is enforced.

use crate::job::MARK_START;
use crate::report::Reporter;
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
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

/// Runs `qemu ARGS` with stdin null until it exits or `timeout` passes.
pub fn run(
    qemu: &Path,
    args: &[OsString],
    log_path: &Path,
    timeout: Duration,
    reporter: Reporter,
) -> Result<ConsoleRun> {
    let mut log_file = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let start = Instant::now();
    let mut child = Command::new(qemu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let stdout = child.stdout.take().context("QEMU's stdout")?;
    let stderr = child.stderr.take().context("QEMU's stderr")?;

    let console = std::thread::spawn(
        move || -> (String, Option<Duration>, Option<std::io::Error>) {
            let mut reader = BufReader::new(stdout);
            let mut log = String::new();
            let mut first_command_at = None;
            let mut write_err = None;
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                let line = String::from_utf8_lossy(&buf);
                if first_command_at.is_none() && line.contains(MARK_START) {
                    first_command_at = Some(start.elapsed());
                }
                reporter.console_line(&line);
                if write_err.is_none() {
                    if let Err(e) = writeln!(log_file, "{line}") {
                        write_err = Some(e);
                    }
                }
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
        if start.elapsed() >= timeout {
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
