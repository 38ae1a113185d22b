//! The recorder of `splice-transcript`: numbered operations with their results and the
//! state they leave (sizes and checksums), and nothing that differs between two runs
//! on two kernels that behave the same (no times, no pointers, no fd numbers).

use crate::files::fnv64;
use crate::sys::{errno_name, pipe_bytes, SysResult};
use anyhow::{Context, Result};
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::path::Path;

pub struct Transcript<W: Write> {
    out: W,
    n: usize,
    section: String,
    /// Lines held back while writing them could fail (e.g. under RLIMIT_FSIZE).
    held: Option<String>,
}

impl<W: Write> Transcript<W> {
    pub fn new(out: W) -> Self {
        Transcript {
            out,
            n: 0,
            section: String::new(),
            held: None,
        }
    }

    fn emit(&mut self, line: &str) -> Result<()> {
        if let Some(h) = &mut self.held {
            h.push_str(line);
            h.push('\n');
            return Ok(());
        }
        writeln!(self.out, "{line}").context("writing the transcript")?;
        self.out.flush().context("writing the transcript")
    }

    /// Holds the lines that follow in memory, until `release`: for operations under
    /// limits that would also cut the transcript's own writes short.
    pub fn hold(&mut self) {
        self.held.get_or_insert_with(String::new);
    }

    /// Writes out the held lines and writes lines as they come again.
    pub fn release(&mut self) -> Result<()> {
        if let Some(h) = self.held.take() {
            self.out
                .write_all(h.as_bytes())
                .context("writing the transcript")?;
            self.out.flush().context("writing the transcript")?;
        }
        Ok(())
    }

    /// Starts a section; its name prefixes the operations that follow.
    pub fn section(&mut self, name: &str) -> Result<()> {
        self.section = name.to_string();
        self.emit(&format!("== {name}"))
    }

    /// Records an operation and its result: the byte count, or the errno by name.
    pub fn op(&mut self, desc: &str, r: SysResult) -> Result<()> {
        self.n += 1;
        let res = match r {
            Ok(n) => n.to_string(),
            Err(e) => errno_name(e),
        };
        let line = format!("{:03} [{}] {desc} => {res}", self.n, self.section);
        self.emit(&line)
    }

    /// Records a piece of state after an operation.
    pub fn state(&mut self, what: &str) -> Result<()> {
        self.emit(&format!("      {what}"))
    }

    /// Records a file's size and checksum.
    pub fn file(&mut self, name: &str, path: &Path) -> Result<()> {
        let s = file_state(path)?;
        self.state(&format!("{name}: {s}"))
    }

    /// Records the bytes waiting in a pipe.
    pub fn pipe(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<()> {
        let s = match pipe_bytes(fd) {
            Ok(n) => format!("{n} bytes"),
            Err(e) => format!("FIONREAD {}", errno_name(e)),
        };
        self.state(&format!("{name}: {s}"))
    }

    pub fn into_inner(mut self) -> Result<W> {
        self.release()?;
        Ok(self.out)
    }
}

/// `size=N fnv=HEX` of a file, or `missing`.
pub fn file_state(path: &Path) -> Result<String> {
    match std::fs::read(path) {
        Ok(data) => Ok(format!("size={} fnv={:016x}", data.len(), fnv64(&data))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("missing".to_string()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    #[test]
    fn lines() {
        let mut t = Transcript::new(Vec::new());
        t.section("tmpfs").unwrap();
        t.op("splice(a -> b, 3)", Ok(3)).unwrap();
        t.op("splice(a -> b, 3)", Err(Errno::EAGAIN)).unwrap();
        t.hold();
        t.state("pipe: 0 bytes").unwrap();
        assert!(!String::from_utf8_lossy(&t.out).contains("pipe:"));
        let text = String::from_utf8(t.into_inner().unwrap()).unwrap();
        assert_eq!(
            text,
            "== tmpfs\n001 [tmpfs] splice(a -> b, 3) => 3\n002 [tmpfs] splice(a -> b, 3) => EAGAIN\n      pipe: 0 bytes\n"
        );
    }
}
