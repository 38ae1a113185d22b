//! Devices served in the test process through the library API.  They need
//! root and a kernel with ublk, so they are #[ignore]d on the host; the
//! guest runs them with `--ignored` (see scripts/qemu-smoke.sh).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ublk::ctrl::Ctrl;
use ublk::uapi::UBLK_F_SPLICE_ZC;
use ublk::{Device, DeviceConfig, TargetConfig};

static SERIAL: Mutex<()> = Mutex::new(());

/// A page-aligned buffer for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Aligned { ptr, len }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: owned allocation of len bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
    fn as_ref(&self) -> &[u8] {
        // SAFETY: owned allocation of len bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, 4096).unwrap();
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn direct(dev: &Device) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev.block_path())
        .with_context(|| format!("open {}", dev.block_path().display()))
}

fn write_at(f: &mut File, off: u64, data: &[u8]) -> Result<()> {
    let mut b = Aligned::new(data.len());
    b.as_mut().copy_from_slice(data);
    f.seek(SeekFrom::Start(off))?;
    f.write_all(b.as_ref())?;
    Ok(())
}

fn read_at(f: &mut File, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = Aligned::new(len);
    f.seek(SeekFrom::Start(off))?;
    f.read_exact(b.as_mut())?;
    Ok(b.as_ref().to_vec())
}

fn scratch_file(name: &str, len: usize) -> Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("ublk-inproc-{}-{name}", std::process::id()));
    std::fs::write(&p, pattern(len, 7))?;
    Ok(p)
}

fn assert_gone(id: u32) {
    assert!(!ublk::device::block_path(id).exists());
    assert!(!ublk::device::char_path(id).exists());
}

fn loop_round_trip(zero_copy: bool) -> Result<()> {
    let path = scratch_file(if zero_copy { "zc" } else { "copy" }, 8 << 20)?;
    let mut cfg = DeviceConfig::new(TargetConfig::Loop {
        path: path.clone(),
        buffered: true,
    });
    cfg.nr_queues = 2;
    cfg.depth = 32;
    cfg.zero_copy = zero_copy;
    let dev = Device::start(&cfg)?;
    let id = dev.id();
    assert_eq!(dev.flags() & UBLK_F_SPLICE_ZC != 0, zero_copy);
    let mut f = direct(&dev)?;
    let data = pattern(1 << 20, 42);
    write_at(&mut f, 3 << 20, &data)?;
    write_at(&mut f, 4096, &data[..8192])?;
    f.sync_all()?;
    assert_eq!(read_at(&mut f, 3 << 20, 1 << 20)?, data);
    assert_eq!(read_at(&mut f, 4096, 8192)?, &data[..8192]);
    // The backing file has the data.
    let back = std::fs::read(&path)?;
    assert_eq!(&back[3 << 20..4 << 20], &data[..]);
    assert_eq!(&back[4096..4096 + 8192], &data[..8192]);
    drop(f);
    let st = dev.stats();
    assert!(st.reads > 0 && st.writes > 0 && st.flushes > 0, "{st:?}");
    assert_eq!(st.errors, 0, "{st:?}");
    if zero_copy {
        assert!(st.splices >= st.reads + st.writes, "{st:?}");
    } else {
        assert_eq!(st.splices, 0);
    }
    dev.stop_and_delete()?;
    assert_gone(id);
    std::fs::remove_file(&path)?;
    Ok(())
}

fn kernel_has_zc() -> bool {
    ublk::admin::features()
        .map(|f| f & UBLK_F_SPLICE_ZC != 0)
        .unwrap_or(false)
}

#[test]
#[ignore = "needs root and /dev/ublk-control: run in the test VM with --ignored"]
fn null_copy_mode() -> Result<()> {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = DeviceConfig::new(TargetConfig::Null { size: 64 << 20 });
    cfg.depth = 16;
    let dev = Device::start(&cfg)?;
    let id = dev.id();
    assert!(dev.block_path().exists());
    let mut f = direct(&dev)?;
    write_at(&mut f, 0, &pattern(256 << 10, 1))?;
    let r = read_at(&mut f, 0, 256 << 10)?;
    assert_eq!(r.len(), 256 << 10);
    drop(f);
    let st = dev.stats();
    assert!(st.reads >= 1 && st.writes >= 1, "{st:?}");
    dev.stop_and_delete()?;
    assert_gone(id);
    Ok(())
}

#[test]
#[ignore = "needs root and /dev/ublk-control: run in the test VM with --ignored"]
fn loop_copy_mode() -> Result<()> {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    loop_round_trip(false)
}

#[test]
#[ignore = "needs root and /dev/ublk-control: run in the test VM with --ignored"]
fn loop_zero_copy_or_clean_refusal() -> Result<()> {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if kernel_has_zc() {
        return loop_round_trip(true);
    }
    let before = ublk::admin::device_ids();
    let mut cfg = DeviceConfig::new(TargetConfig::Null { size: 1 << 20 });
    cfg.zero_copy = true;
    let err = match Device::start(&cfg) {
        Ok(_) => panic!("-z succeeded on a kernel without UBLK_F_SPLICE_ZC"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("lacks UBLK_F_SPLICE_ZC"), "{err}");
    assert_eq!(
        ublk::admin::device_ids(),
        before,
        "a half-made device was left"
    );
    Ok(())
}

#[test]
#[ignore = "needs root and /dev/ublk-control: run in the test VM with --ignored"]
fn stopped_from_outside() -> Result<()> {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = Device::start(&DeviceConfig::new(TargetConfig::Null { size: 1 << 20 }))?;
    let id = dev.id();
    Ctrl::open()?.stop_dev(id)?;
    let t = Instant::now();
    while dev.queues_exited() == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "queues did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    dev.stop_and_delete()?;
    assert_gone(id);
    Ok(())
}
