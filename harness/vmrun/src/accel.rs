//! Choosing the accelerator: KVM only when it really runs a guest at a usable speed, else TCG.
//!
//! `/dev/kvm` being there proves little: in a nested setup QEMU may abort while it sets up
//! the vCPU (`-cpu host` with an MSR the outer hypervisor refuses), or the guest may run
//! but so slowly that a kernel does not get through its decompressor in a minute. So the
//! probe boots a tiny guest under KVM: a 64 KiB firmware image that writes 32 MiB of memory
//! in real mode and then exits QEMU through the `isa-debug-exit` device. KVM counts as
//! working when QEMU exits with the probe's code within [`PROBE_BUDGET`] (a working KVM
//! needs a few milliseconds for the writes, TCG about 0.1 s). Nothing is cached: the probe
//! costs well under a second, and a cached answer could go stale.

use crate::qemu::Accel;
use anyhow::{bail, Context, Result};
use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM if a probe guest runs well with it, else TCG
    Auto,
    /// KVM, or fail
    Kvm,
    /// TCG (emulation)
    Tcg,
}

impl FromStr for AccelChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            _ => bail!("unknown accelerator {s:?} (expected auto, kvm or tcg)"),
        }
    }
}

/// The accelerator to use, the matching `-cpu` model, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelPlan {
    pub accel: Accel,
    pub cpu: &'static str,
    pub why: String,
}

impl fmt::Display for AccelPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.accel, self.why)
    }
}

pub const KVM_CPU: &str = "host";
pub const TCG_CPU: &str = "max";

/// The longest a working KVM may take to run the probe, QEMU's start included.
pub const PROBE_BUDGET: Duration = Duration::from_millis(1500);
/// The probe's code on the debug-exit port; QEMU exits with `(code << 1) | 1`.
const PROBE_CODE: u8 = 0x2a;
const PROBE_EXIT: i32 = ((PROBE_CODE as i32) << 1) | 1;
const DEBUG_EXIT_PORT: u8 = 0xf4;

/// The probe firmware: 64 KiB mapped just below 1 MiB, entered at the reset vector.
pub fn probe_firmware() -> Vec<u8> {
    #[rustfmt::skip]
    let code: [u8; 39] = [
        0xfa,                   // 0:  cli
        0xb9, 0x40, 0x00,       // 1:  mov cx, 64          ; 64 rounds of 512 KiB
        0xbb, 0x00, 0x10,       // 4:  mov bx, 0x1000      ; round: segments 0x1000..0x8000
        0x8e, 0xc3,             // 7:  mov es, bx          ; segment loop
        0x31, 0xff,             // 9:  xor di, di
        0x51,                   // 11: push cx
        0xb9, 0x00, 0x80,       // 12: mov cx, 0x8000      ; 32 Ki words = 64 KiB
        0x89, 0xd8,             // 15: mov ax, bx
        0xf3, 0xab,             // 17: rep stosw
        0x59,                   // 19: pop cx
        0x81, 0xc3, 0x00, 0x10, // 20: add bx, 0x1000
        0x81, 0xfb, 0x00, 0x90, // 24: cmp bx, 0x9000
        0x72, 0xe9,             // 28: jb 7
        0xe2, 0xe4,             // 30: loop 4
        0xb0, PROBE_CODE,       // 32: mov al, PROBE_CODE
        0xe6, DEBUG_EXIT_PORT,  // 34: out DEBUG_EXIT_PORT, al
        0xf4,                   // 36: hlt
        0xeb, 0xfd,             // 37: jmp 36
    ];
    let mut img = vec![0xf4u8; 64 * 1024]; // hlt everywhere else
    img[..code.len()].copy_from_slice(&code);
    // Reset vector, F000:FFF0: jmp far F000:0000.
    img[0xfff0..0xfff5].copy_from_slice(&[0xea, 0x00, 0x00, 0x00, 0xf0]);
    img
}

/// What a probe run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// QEMU ended by itself: its exit code, or the signal that killed it, and its stderr.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        elapsed: Duration,
        stderr: String,
    },
    /// Still running after the budget; killed.
    TooSlow,
}

/// Judges a probe run: `Ok(())` when KVM works, else why not.
pub fn judge_probe(outcome: &ProbeOutcome) -> Result<(), String> {
    match outcome {
        ProbeOutcome::Exited {
            code: Some(PROBE_EXIT),
            elapsed,
            ..
        } if *elapsed <= PROBE_BUDGET => Ok(()),
        ProbeOutcome::Exited {
            code: Some(PROBE_EXIT),
            elapsed,
            ..
        } => Err(format!(
            "the KVM probe guest took {:.1} s (budget {:.1} s)",
            elapsed.as_secs_f64(),
            PROBE_BUDGET.as_secs_f64()
        )),
        ProbeOutcome::Exited {
            code,
            signal,
            stderr,
            ..
        } => {
            let status = match (code, signal) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                (None, None) => "ended".to_string(),
            };
            let first = stderr
                .lines()
                .map(|l| l.trim_start_matches("qemu-system-x86_64: ").trim())
                .find(|l| !l.is_empty() && !l.starts_with("warning:"))
                .unwrap_or("no message");
            Err(format!(
                "QEMU failed to run a KVM guest with -cpu {KVM_CPU} ({status}: {first})"
            ))
        }
        ProbeOutcome::TooSlow => Err(format!(
            "a KVM guest runs but far too slowly: the probe (32 MiB of memory writes, about 0.1 s \
             under TCG) did not finish within {:.1} s",
            PROBE_BUDGET.as_secs_f64()
        )),
    }
}

/// Runs the probe under KVM. `work_dir` holds the firmware file while it runs.
pub fn run_probe(qemu: &Path, work_dir: &Path) -> Result<ProbeOutcome> {
    let fw = work_dir.join("kvm-probe.bin");
    std::fs::write(&fw, probe_firmware()).with_context(|| format!("writing {}", fw.display()))?;
    let start = Instant::now();
    let mut child = Command::new(qemu)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-machine",
            "pc,accel=kvm",
        ])
        .args(["-cpu", KVM_CPU, "-m", "16M", "-device"])
        .arg(format!(
            "isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=1"
        ))
        .arg("-bios")
        .arg(&fw)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let outcome = loop {
        if let Some(status) = child.try_wait().context("waiting for the KVM probe")? {
            let elapsed = start.elapsed();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut stderr);
            }
            use std::os::unix::process::ExitStatusExt;
            break ProbeOutcome::Exited {
                code: status.code(),
                signal: status.signal(),
                elapsed,
                stderr,
            };
        }
        if start.elapsed() > PROBE_BUDGET {
            let _ = child.kill();
            let _ = child.wait();
            break ProbeOutcome::TooSlow;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = std::fs::remove_file(&fw);
    Ok(outcome)
}

/// Whether /dev/kvm can be opened for reading and writing; why not otherwise.
fn kvm_device_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm: {e}"))
}

fn tcg(why: String) -> AccelPlan {
    AccelPlan {
        accel: Accel::Tcg,
        cpu: TCG_CPU,
        why,
    }
}

/// Decides the accelerator. With `Kvm`, a KVM that does not work is an error; with `Auto`,
/// it means TCG.
pub fn decide(choice: AccelChoice, qemu: &Path, work_dir: &Path) -> Result<AccelPlan> {
    if choice == AccelChoice::Tcg {
        return Ok(tcg("asked for".into()));
    }
    let verdict = kvm_device_usable().and_then(|()| match run_probe(qemu, work_dir) {
        Ok(outcome) => judge_probe(&outcome),
        Err(e) => Err(format!("{e:#}")),
    });
    match (verdict, choice) {
        (Ok(()), _) => Ok(AccelPlan {
            accel: Accel::Kvm,
            cpu: KVM_CPU,
            why: "probe passed".into(),
        }),
        (Err(why), AccelChoice::Kvm) => bail!("--accel kvm, but KVM does not work here: {why}"),
        (Err(why), _) => Ok(tcg(format!("KVM unusable: {why}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_layout() {
        let fw = probe_firmware();
        assert_eq!(fw.len(), 65536, "QEMU wants a BIOS of a multiple of 64 KiB");
        assert_eq!(&fw[0xfff0..0xfff5], &[0xea, 0, 0, 0, 0xf0]);
        // The exit sequence: mov al, CODE; out PORT, al.
        let pos = fw
            .windows(4)
            .position(|w| w == [0xb0, PROBE_CODE, 0xe6, DEBUG_EXIT_PORT]);
        assert_eq!(pos, Some(32));
        // Both backward jumps land on instructions: "mov es, bx" and "mov bx, 0x1000".
        assert_eq!(fw[28], 0x72);
        assert_eq!(30 + (fw[29] as i8 as i32), 7);
        assert_eq!(&fw[7..9], &[0x8e, 0xc3]);
        assert_eq!(fw[30], 0xe2);
        assert_eq!(32 + (fw[31] as i8 as i32), 4);
        assert_eq!(fw[4], 0xbb);
    }

    #[test]
    fn judging() {
        let ok = ProbeOutcome::Exited {
            code: Some(85),
            signal: None,
            elapsed: Duration::from_millis(80),
            stderr: "qemu-system-x86_64: warning: host doesn't support requested feature\n".into(),
        };
        assert_eq!(judge_probe(&ok), Ok(()));
        let slow = ProbeOutcome::Exited {
            code: Some(85),
            signal: None,
            elapsed: Duration::from_secs(5),
            stderr: String::new(),
        };
        assert!(judge_probe(&slow).unwrap_err().contains("took 5.0 s"));
        let abort = ProbeOutcome::Exited {
            code: None,
            signal: Some(6),
            elapsed: Duration::from_millis(40),
            stderr:
                "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\nqemu-system-x86_64: \
                     ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion failed.\n"
                    .into(),
        };
        let why = judge_probe(&abort).unwrap_err();
        assert!(
            why.contains("killed by signal 6") && why.contains("failed to set MSR 0x10a"),
            "{why}"
        );
        assert!(judge_probe(&ProbeOutcome::TooSlow)
            .unwrap_err()
            .contains("too slowly"));
    }

    #[test]
    fn choice_parsing() {
        assert_eq!("auto".parse::<AccelChoice>().unwrap(), AccelChoice::Auto);
        assert_eq!("kvm".parse::<AccelChoice>().unwrap(), AccelChoice::Kvm);
        assert_eq!("tcg".parse::<AccelChoice>().unwrap(), AccelChoice::Tcg);
        assert!("hvf".parse::<AccelChoice>().is_err());
    }
}
