//! The rules for a device's parameters, in one place: the `ublk` command's argument
//! parsers, [`crate::DeviceConfig::validate`] (every device the library starts) and the
//! queue threads call these, so that each rule is checked the same way everywhere and
//! has one message.  Each returns the value as the device uses it, or the message.

use crate::device::DeviceConfig;
use crate::uapi::{UBLK_MAX_QUEUE_DEPTH, UBLK_SPLICE_BUF_MAX_SIZE};

/// Device ids the driver accepts: below UBLK_MINORS.
pub const MAX_DEV_ID: u32 = 1 << 20;

/// The unit and the bounds of the largest request (`max_io_buf_bytes`): whole pages
/// of 4 KiB (the driver rounds down to its page size), at most what a splice position
/// can address in one request (1 GiB).
pub const IO_UNIT: u32 = 4096;
pub const MAX_IO_BYTES: u32 = UBLK_SPLICE_BUF_MAX_SIZE as u32;

/// The smallest null device: one sector.
pub const MIN_NULL_SIZE: u64 = 512;

/// Queue depth: 1..=4096 (UBLK_MAX_QUEUE_DEPTH; a splice position has 12 bits of tag).
pub fn depth(d: u32) -> Result<u16, String> {
    match u16::try_from(d) {
        Ok(d) if (1..=UBLK_MAX_QUEUE_DEPTH).contains(&d) => Ok(d),
        _ => Err(format!(
            "queue depth {d} is out of range: it must be between 1 and {UBLK_MAX_QUEUE_DEPTH}"
        )),
    }
}

/// Hardware queues: at least one.
pub fn queues(n: u16) -> Result<u16, String> {
    if n == 0 {
        return Err("at least one queue is needed".into());
    }
    Ok(n)
}

/// The largest request in bytes: a multiple of 4K between 4K and 1G.
pub fn max_io(n: u64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(b) if (IO_UNIT..=MAX_IO_BYTES).contains(&b) && b % IO_UNIT == 0 => Ok(b),
        _ => Err(format!(
            "max io size {n} is out of range: it must be a multiple of 4K between 4K and 1G"
        )),
    }
}

/// A device id asked for: below 1048576.
pub fn dev_id(id: u32) -> Result<u32, String> {
    if id >= MAX_DEV_ID {
        return Err(format!(
            "device id {id} is out of range: it must be below {MAX_DEV_ID}"
        ));
    }
    Ok(id)
}

/// The size of a null device in bytes: at least 512 (it is rounded down to 512).
pub fn null_size(size: u64) -> Result<u64, String> {
    if size < MIN_NULL_SIZE {
        return Err(format!(
            "null target size {size} is too small (at least {MIN_NULL_SIZE} bytes)"
        ));
    }
    Ok(size & !(MIN_NULL_SIZE - 1))
}

/// Every rule that applies to `cfg`; the first one broken.
pub fn device(cfg: &DeviceConfig) -> Result<(), String> {
    depth(u32::from(cfg.depth))?;
    queues(cfg.nr_queues)?;
    max_io(u64::from(cfg.max_io_buf_bytes))?;
    if let Some(id) = cfg.dev_id {
        dev_id(id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_rule() {
        assert_eq!(depth(1), Ok(1));
        assert_eq!(depth(4096), Ok(4096));
        for bad in [0, 4097, 70_000] {
            let e = depth(bad).unwrap_err();
            assert!(e.contains("between 1 and 4096"), "{e}");
            assert!(e.contains(&bad.to_string()), "{e}");
        }
    }

    #[test]
    fn queues_rule() {
        assert_eq!(queues(1), Ok(1));
        assert_eq!(queues(u16::MAX), Ok(u16::MAX));
        assert_eq!(queues(0), Err("at least one queue is needed".to_string()));
    }

    #[test]
    fn max_io_rule() {
        assert_eq!(max_io(4096), Ok(4096));
        assert_eq!(max_io(512 << 10), Ok(512 << 10));
        assert_eq!(max_io(1 << 30), Ok(1 << 30));
        for bad in [
            0,
            512,
            4095,
            4096 + 512,
            6000,
            (1 << 30) + 4096,
            2 << 30,
            u64::MAX,
        ] {
            let e = max_io(bad).unwrap_err();
            assert!(e.contains("multiple of 4K between 4K and 1G"), "{bad}: {e}");
        }
    }

    #[test]
    fn dev_id_rule() {
        assert_eq!(dev_id(0), Ok(0));
        assert_eq!(dev_id(MAX_DEV_ID - 1), Ok(MAX_DEV_ID - 1));
        let e = dev_id(MAX_DEV_ID).unwrap_err();
        assert!(e.contains("below 1048576"), "{e}");
    }

    #[test]
    fn null_size_rule() {
        assert_eq!(null_size(512), Ok(512));
        assert_eq!(null_size(1000), Ok(512));
        assert_eq!(null_size(1 << 30), Ok(1 << 30));
        for bad in [0, 1, 511] {
            let e = null_size(bad).unwrap_err();
            assert!(e.contains("too small (at least 512 bytes)"), "{e}");
        }
    }

    #[test]
    fn device_checks_every_rule() {
        let ok = DeviceConfig::new();
        assert_eq!(device(&ok), Ok(()));
        let with = |f: &dyn Fn(&mut DeviceConfig)| {
            let mut c = DeviceConfig::new();
            f(&mut c);
            device(&c)
        };
        assert_eq!(with(&|c| c.depth = 0), Err(depth(0).unwrap_err()));
        assert_eq!(with(&|c| c.depth = 5000), Err(depth(5000).unwrap_err()));
        assert_eq!(with(&|c| c.nr_queues = 0), Err(queues(0).unwrap_err()));
        // The library has the CLI's rule: a multiple of 4K, not only >= 4096.
        assert_eq!(
            with(&|c| c.max_io_buf_bytes = 6000),
            Err(max_io(6000).unwrap_err())
        );
        assert_eq!(
            with(&|c| c.max_io_buf_bytes = 2048),
            Err(max_io(2048).unwrap_err())
        );
        assert_eq!(
            with(&|c| c.dev_id = Some(MAX_DEV_ID)),
            Err(dev_id(MAX_DEV_ID).unwrap_err())
        );
        assert_eq!(with(&|c| c.dev_id = Some(7)), Ok(()));
    }
}
