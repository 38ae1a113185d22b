//! Runs one test executable, passing its output line by line to the parser and to a
//! progress callback, with a time limit.

use super::libtest::{Event, Parser};
use super::{Outcome, TestResult};
use anyhow::{Context, Result};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The results of one executable and how long it ran.
pub struct ExeRun {
    pub results: Vec<TestResult>,
    pub elapsed: Duration,
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => {
            let name = nix::sys::signal::Signal::try_from(s)
                .map(|s| s.as_str())
                .unwrap_or("?");
            format!("was killed by signal {s} ({name})")
        }
        _ => format!("ended with {status}"),
    }
}

/// Splits complete lines off `pending` and hands them on.
fn feed_lines(pending: &mut Vec<u8>, parser: &mut Parser, progress: &mut impl FnMut(&str, &Event)) {
    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=i).collect();
        let line = String::from_utf8_lossy(&line[..i]).into_owned();
        let ev = parser.line(&line);
        progress(&line, &ev);
    }
}

/// Runs `exe ARGS`, feeding each line of its stdout to `progress` as it comes; its
/// stderr goes to ours. After `timeout` the executable is killed, and the test it was
/// running fails.
pub fn run(
    suite: &str,
    exe: &Path,
    args: &[String],
    timeout: Duration,
    mut progress: impl FnMut(&str, &Event),
) -> Result<ExeRun> {
    let start = Instant::now();
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    // raw chunks, so that an unfinished last line ("test NAME ... ") is ours to see even
    // when the executable is killed and something it started keeps the pipe open
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });

    let mut parser = Parser::new(suite);
    let mut pending: Vec<u8> = Vec::new();
    let deadline = start + timeout;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => {
                pending.extend_from_slice(&chunk);
                feed_lines(&mut pending, &mut parser, &mut progress);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                // our own child, by its pid
                let _ = child.kill();
                // take what it printed until the pipe closes, if it does soon
                while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(5)) {
                    pending.extend_from_slice(&chunk);
                    feed_lines(&mut pending, &mut parser, &mut progress);
                }
                break;
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {}", exe.display()))?;
    if !timed_out {
        let _ = reader.join();
    }
    let partial = String::from_utf8_lossy(&pending).into_owned();
    if !partial.is_empty() {
        progress(&partial, &Event::Other);
    }
    let died = if timed_out {
        Some(format!(
            "timed out after {} s; the test executable was killed",
            timeout.as_secs()
        ))
    } else {
        match status.code() {
            // libtest: 0 all passed, 101 some test failed
            Some(0) | Some(101) => None,
            _ => Some(format!("the test executable {}", describe(status))),
        }
    };
    let mut results = parser.finish(&partial, died);
    if status.code() == Some(101) && !results.iter().any(|r| r.outcome == Outcome::Failed) {
        results.push(TestResult {
            suite: suite.to_string(),
            name: "(test executable)".to_string(),
            outcome: Outcome::Failed,
            message: "the test executable exited with status 101 but no test failed".to_string(),
        });
    }
    Ok(ExeRun {
        results,
        elapsed: start.elapsed(),
    })
}
