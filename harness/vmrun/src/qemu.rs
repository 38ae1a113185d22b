//! The QEMU command line, built from plain data and nothing else (no I/O), so that it can be
//! tested line by line.
//!
//! The machine: `q35` with no default devices (under TCG it boots faster than `pc`, whose
//! ACPI PCI interrupt links cost about 0.1 s per device), qboot instead of SeaBIOS when it is there (no
//! option ROM scan, no boot menu), the kernel loaded directly, the serial port on stdio, the
//! host's root as the guest's read-only root over 9p, the run directory as a writable 9p share,
//! and an optional raw scratch disk on virtio-blk.

use crate::job::{NINEP_MSIZE, ROOT_TAG, SHARE_TAG};
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Console loglevel: messages with a level below it reach the console. 6 shows EMERG..NOTICE:
/// every splat (panic, Oops, BUG, WARNING and the backtraces printed at KERN_DEFAULT = 4,
/// KASAN, lockdep, hung tasks, stalls) and the NOTICE `Linux version` banner, but not the
/// INFO chatter of the boot.
pub const CONSOLE_LOGLEVEL: u32 = 6;

#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub kernel: PathBuf,
    pub accel: Accel,
    /// `-cpu` model.
    pub cpu: String,
    pub cpus: u32,
    pub mem_mib: u64,
    /// Firmware image (`-bios`); `None` keeps QEMU's default (SeaBIOS).
    pub bios: Option<PathBuf>,
    /// The directory shared read-only as the guest's root (normally `/`).
    pub root_dir: PathBuf,
    /// The run directory, shared read-write.
    pub share_dir: PathBuf,
    /// A raw image for the scratch virtio-blk disk (may be `/dev/fd/N`).
    pub scratch_disk: Option<PathBuf>,
    /// The guest path of the init program.
    pub init: PathBuf,
    /// Extra kernel arguments, appended last so that they win.
    pub append: Vec<String>,
    /// An interactive console (`--shell`): ctrl-c goes to the guest instead of ending QEMU,
    /// and ctrl-a x ends QEMU.
    pub interactive: bool,
    /// The guest's TSC frequency, when it is known (under TCG the guest reads the host's
    /// TSC): given to the kernel as `tsc_early_khz`, so that it does not calibrate the TSC
    /// against the emulated PIT, which a loaded host can throw off by a factor of 20 (and
    /// `tsc=reliable` keeps the watchdog from noticing: the guest's clock would race).
    pub tsc_khz: Option<u64>,
}

/// Escapes a value for QEMU's `key=value,...` option syntax, where a comma is doubled.
pub fn opt_escape(s: &str) -> String {
    s.replace(',', ",,")
}

impl QemuConfig {
    /// The kernel command line.
    pub fn kernel_cmdline(&self) -> String {
        let mut args: Vec<String> = vec![
            "console=ttyS0".into(),
            format!("loglevel={CONSOLE_LOGLEVEL}"),
            // A panic reboots at once, and -no-reboot turns the reboot into QEMU's exit.
            "panic=-1".into(),
            "oops=panic".into(),
            format!("root={ROOT_TAG}"),
            "rootfstype=9p".into(),
            format!("rootflags=trans=virtio,version=9p2000.L,msize={NINEP_MSIZE},cache=loose"),
            "ro".into(),
            format!("init={}", self.init.display()),
            // Boot time: one UART to probe, no PS/2 controller, no timer check, no
            // speculation mitigations (costly under TCG and pointless in a test VM).
            "8250.nr_uarts=1".into(),
            "i8042.noaux".into(),
            "i8042.nokbd".into(),
            "no_timer_check".into(),
            "tsc=reliable".into(),
            "mitigations=off".into(),
            "rcupdate.rcu_expedited=1".into(),
        ];
        if let Some(khz) = self.tsc_khz {
            args.push(format!("tsc_early_khz={khz}"));
        }
        args.extend(self.append.iter().cloned());
        args.join(" ")
    }

    /// The complete argument list (without the program name).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        push(&["-monitor", "none", "-parallel", "none", "-vga", "none"]);
        if self.interactive {
            push(&["-chardev", "stdio,id=console,mux=on,signal=off"]);
            push(&["-serial", "chardev:console"]);
        } else {
            push(&["-serial", "stdio"]);
        }
        push(&["-no-reboot"]);
        push(&["-machine", &format!("q35,accel={}", self.accel)]);
        push(&["-cpu", &self.cpu]);
        push(&["-smp", &self.cpus.to_string()]);
        push(&["-m", &format!("{}M", self.mem_mib)]);
        if let Some(bios) = &self.bios {
            push(&["-bios", &bios.to_string_lossy()]);
        }
        push(&["-kernel", &self.kernel.to_string_lossy()]);
        push(&["-append", &self.kernel_cmdline()]);
        // The host's root, read-only, as the guest's root.
        push(&[
            "-fsdev",
            &format!(
                "local,id=fsroot,path={},security_model=none,readonly=on,multidevs=remap",
                opt_escape(&self.root_dir.to_string_lossy())
            ),
        ]);
        push(&[
            "-device",
            &format!("virtio-9p-pci,fsdev=fsroot,mount_tag={ROOT_TAG}"),
        ]);
        // The run directory, writable: job file in, status and results out.
        push(&[
            "-fsdev",
            &format!(
                "local,id=fsshare,path={},security_model=none,multidevs=remap",
                opt_escape(&self.share_dir.to_string_lossy())
            ),
        ]);
        push(&[
            "-device",
            &format!("virtio-9p-pci,fsdev=fsshare,mount_tag={SHARE_TAG}"),
        ]);
        if let Some(disk) = &self.scratch_disk {
            push(&[
                "-drive",
                &format!(
                    "file={},if=none,id=scratch,format=raw,cache=unsafe,discard=unmap",
                    opt_escape(&disk.to_string_lossy())
                ),
            ]);
            push(&["-device", "virtio-blk-pci,drive=scratch"]);
        }
        a.into_iter().map(OsString::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> QemuConfig {
        QemuConfig {
            kernel: "/k/bzImage".into(),
            accel: Accel::Tcg,
            cpu: "max".into(),
            cpus: 2,
            mem_mib: 2048,
            bios: Some("/usr/share/qemu/qboot.rom".into()),
            root_dir: "/".into(),
            share_dir: "/cache/runs/r,1".into(),
            scratch_disk: Some("/dev/fd/5".into()),
            init: "/work/target/release/vm-init".into(),
            append: vec!["foo=bar".into()],
            interactive: false,
            tsc_khz: Some(2_600_000),
        }
    }

    fn strings(c: &QemuConfig) -> Vec<String> {
        c.args()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    /// The value that follows `flag`, for every occurrence of it.
    fn values(args: &[String], flag: &str) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn machine_and_accel() {
        let a = strings(&config());
        assert_eq!(values(&a, "-machine"), ["q35,accel=tcg"]);
        assert_eq!(values(&a, "-cpu"), ["max"]);
        assert_eq!(values(&a, "-smp"), ["2"]);
        assert_eq!(values(&a, "-m"), ["2048M"]);
        assert_eq!(values(&a, "-bios"), ["/usr/share/qemu/qboot.rom"]);
        assert_eq!(values(&a, "-kernel"), ["/k/bzImage"]);
        for flag in ["-no-reboot", "-nodefaults", "-no-user-config"] {
            assert!(a.contains(&flag.to_string()), "{flag} missing");
        }
        assert_eq!(values(&a, "-display"), ["none"]);
        assert_eq!(values(&a, "-monitor"), ["none"]);
        assert_eq!(values(&a, "-serial"), ["stdio"]);
        assert!(values(&a, "-chardev").is_empty());

        let mut kvm = config();
        kvm.accel = Accel::Kvm;
        kvm.bios = None;
        let a = strings(&kvm);
        assert_eq!(values(&a, "-machine"), ["q35,accel=kvm"]);
        assert!(values(&a, "-bios").is_empty());
    }

    #[test]
    fn interactive_console() {
        let mut c = config();
        c.interactive = true;
        let a = strings(&c);
        // ctrl-c must reach the guest (signal=off); mux=on gives the ctrl-a x escape.
        assert_eq!(
            values(&a, "-chardev"),
            ["stdio,id=console,mux=on,signal=off"]
        );
        assert_eq!(values(&a, "-serial"), ["chardev:console"]);
        assert_eq!(values(&a, "-monitor"), ["none"]);
    }

    #[test]
    fn shares_and_disk() {
        let a = strings(&config());
        let fsdev = values(&a, "-fsdev");
        assert_eq!(fsdev.len(), 2);
        assert!(
            fsdev[0].starts_with("local,id=fsroot,path=/,"),
            "{}",
            fsdev[0]
        );
        assert!(fsdev[0].contains(",readonly=on"));
        // The share is writable, and the comma in its path is escaped.
        assert_eq!(
            fsdev[1],
            "local,id=fsshare,path=/cache/runs/r,,1,security_model=none,multidevs=remap"
        );
        let devices = values(&a, "-device");
        assert!(devices.contains(&"virtio-9p-pci,fsdev=fsroot,mount_tag=vmroot".to_string()));
        assert!(devices.contains(&"virtio-9p-pci,fsdev=fsshare,mount_tag=vmrun".to_string()));
        assert!(devices.contains(&"virtio-blk-pci,drive=scratch".to_string()));
        let drive = values(&a, "-drive");
        assert_eq!(drive.len(), 1);
        assert!(drive[0].starts_with("file=/dev/fd/5,if=none,id=scratch,format=raw"));

        let mut no_disk = config();
        no_disk.scratch_disk = None;
        let a = strings(&no_disk);
        assert!(values(&a, "-drive").is_empty());
        assert!(!values(&a, "-device")
            .iter()
            .any(|d| d.starts_with("virtio-blk")));
    }

    #[test]
    fn kernel_cmdline() {
        let c = config();
        let a = strings(&c);
        assert_eq!(values(&a, "-append"), [c.kernel_cmdline()]);
        let words: Vec<String> = c.kernel_cmdline().split(' ').map(String::from).collect();
        for w in [
            "console=ttyS0",
            "panic=-1",
            "root=vmroot",
            "rootfstype=9p",
            "ro",
            "init=/work/target/release/vm-init",
            "loglevel=6",
        ] {
            assert!(words.contains(&w.to_string()), "{w} missing from {words:?}");
        }
        let rootflags = words.iter().find(|w| w.starts_with("rootflags=")).unwrap();
        assert!(rootflags.contains("trans=virtio") && rootflags.contains("version=9p2000.L"));
        // No "quiet": it would hide KERN_WARNING, i.e. WARNINGs and lockdep splats.
        assert!(!words.contains(&"quiet".to_string()));
        // Loglevel 6 shows KERN_WARNING (4) and KERN_NOTICE (5).
        const { assert!(CONSOLE_LOGLEVEL > 5) };
        assert!(words.contains(&"tsc_early_khz=2600000".to_string()));
        let mut unknown = config();
        unknown.tsc_khz = None;
        assert!(!unknown.kernel_cmdline().contains("tsc_early_khz"));
        // Extra arguments come last, so that they override ours.
        assert_eq!(words.last().unwrap(), "foo=bar");
    }

    #[test]
    fn escape() {
        assert_eq!(opt_escape("a,b,,c"), "a,,b,,,,c");
        assert_eq!(opt_escape("plain"), "plain");
    }
}
