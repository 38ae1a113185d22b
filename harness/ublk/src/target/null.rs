//! The null target: every request completes successfully at once.  READ and
//! WRITE complete with their full byte count (the data is not touched: in
//! copy mode a READ returns whatever the server buffer holds, zeroes at first).

use super::{basic_params, DataRef, Plan, Request, Target, MAX_DISCARD_SECTORS};
use crate::uapi::*;

pub struct NullTarget {
    size: u64,
}

impl NullTarget {
    /// `size` in bytes, rounded down to 512.
    pub fn new(size: u64) -> anyhow::Result<NullTarget> {
        let size = size & !511;
        if size == 0 {
            anyhow::bail!("null target: size must be at least 512 bytes");
        }
        Ok(NullTarget { size })
    }
}

/// The pure mapping of the null target.
pub fn plan_null(req: &Request) -> Plan {
    match req.op {
        UBLK_IO_OP_READ | UBLK_IO_OP_WRITE => match req.data_bytes() {
            Some(b) => Plan::Complete(b as i32),
            None => Plan::Complete(-libc::EINVAL),
        },
        UBLK_IO_OP_FLUSH | UBLK_IO_OP_DISCARD | UBLK_IO_OP_WRITE_ZEROES => Plan::Complete(0),
        _ => Plan::Complete(-libc::EOPNOTSUPP),
    }
}

impl Target for NullTarget {
    fn kind(&self) -> &'static str {
        "null"
    }

    fn backing(&self) -> String {
        "-".to_string()
    }

    fn dev_size(&self) -> u64 {
        self.size
    }

    fn params(&self, max_io_buf_bytes: u32) -> ublk_params {
        ublk_params {
            len: std::mem::size_of::<ublk_params>() as u32,
            types: UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD,
            basic: basic_params(self.size, 9, max_io_buf_bytes, 0),
            discard: ublk_param_discard {
                discard_alignment: 0,
                discard_granularity: 4096,
                max_discard_sectors: MAX_DISCARD_SECTORS,
                max_write_zeroes_sectors: MAX_DISCARD_SECTORS,
                max_discard_segments: 1,
                reserved0: 0,
            },
        }
    }

    fn plan(&self, req: &Request, _data: DataRef, _done: u32) -> Plan {
        plan_null(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: u8, nr: u32) -> Request {
        Request {
            q_id: 0,
            tag: 0,
            op,
            flags: 0,
            start_sector: 0,
            nr_sectors: nr,
        }
    }

    #[test]
    fn null_completes_everything() {
        assert_eq!(plan_null(&req(UBLK_IO_OP_READ, 8)), Plan::Complete(4096));
        assert_eq!(plan_null(&req(UBLK_IO_OP_WRITE, 1)), Plan::Complete(512));
        assert_eq!(plan_null(&req(UBLK_IO_OP_FLUSH, 0)), Plan::Complete(0));
        assert_eq!(plan_null(&req(UBLK_IO_OP_DISCARD, 16)), Plan::Complete(0));
        assert_eq!(
            plan_null(&req(UBLK_IO_OP_WRITE_SAME, 1)),
            Plan::Complete(-libc::EOPNOTSUPP)
        );
    }

    #[test]
    fn null_size() {
        assert!(NullTarget::new(0).is_err());
        assert!(NullTarget::new(511).is_err());
        let t = NullTarget::new(1 << 20 | 100).unwrap();
        assert_eq!(t.dev_size(), 1 << 20);
        let p = t.params(1 << 19);
        assert_eq!(p.basic.dev_sectors, 2048);
        assert_eq!(p.basic.max_sectors, 1024);
    }
}
