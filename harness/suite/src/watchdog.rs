//! [`Watchdog`]: evidence before a hang is killed from outside.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Dumps the blocked tasks (sysrq w) and this process's kernel stacks if a test runs
/// longer than `secs`, so that a hang leaves evidence in the log before vmrun's timeout.
pub struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    pub fn new(what: &str, secs: u64) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let what = what.to_string();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(secs) {
                if d.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            use std::io::Write;
            let mut err = std::io::stderr();
            let _ = writeln!(
                err,
                "WATCHDOG: {what} still running after {secs} s; blocked tasks (sysrq w) and stacks:"
            );
            let _ = std::fs::write("/proc/sysrq-trigger", b"w");
            if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
                for t in rd.flatten() {
                    let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                    let stack = std::fs::read_to_string(t.path().join("stack")).unwrap_or_default();
                    let st = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    let _ = writeln!(
                        err,
                        "task {:?} {}: {st}\n{stack}",
                        t.file_name(),
                        comm.trim()
                    );
                }
            }
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
