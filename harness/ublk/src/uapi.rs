//! The ublk user ABI of Linux 6.1 (`include/uapi/linux/ublk_cmd.h`) plus the
//! additions of the splice zero-copy series, version 3 (`docs/contract.md` and the cover
//! letter): `UBLK_F_SPLICE_ZC` (bit 63), the splice position encoding (`UBLK_SPLICE_*`,
//! [`ublk_splice_pos`]) and the io_uring splice flags `SPLICE_F_DIRECT` and
//! `SPLICE_F_READ_TO_READ` (`include/uapi/linux/io_uring.h`).  Every UAPI constant of the
//! harness lives here.
//!
//! Every constant keeps the kernel's name so it can be compared one to one
//! with the header that the patched kernel installs.  Structures are
//! `#[repr(C)]` copies of the kernel's, with size and offset checks in the
//! tests below.
#![allow(non_camel_case_types)]

// ---------------------------------------------------------------------------
// Control commands, sent as IORING_OP_URING_CMD (SQE128) to /dev/ublk-control.
// On 6.1 these are the plain opcodes (no _IOWR encoding).
// ---------------------------------------------------------------------------
pub const UBLK_CMD_GET_QUEUE_AFFINITY: u32 = 0x01;
pub const UBLK_CMD_GET_DEV_INFO: u32 = 0x02;
pub const UBLK_CMD_ADD_DEV: u32 = 0x04;
pub const UBLK_CMD_DEL_DEV: u32 = 0x05;
pub const UBLK_CMD_START_DEV: u32 = 0x06;
pub const UBLK_CMD_STOP_DEV: u32 = 0x07;
pub const UBLK_CMD_SET_PARAMS: u32 = 0x08;
pub const UBLK_CMD_GET_PARAMS: u32 = 0x09;
pub const UBLK_CMD_START_USER_RECOVERY: u32 = 0x10;
pub const UBLK_CMD_END_USER_RECOVERY: u32 = 0x11;

// ---------------------------------------------------------------------------
// IO commands, sent as IORING_OP_URING_CMD to /dev/ublkcN.  The 16-byte
// `ublksrv_io_cmd` fits in the command area of a normal 64-byte SQE, so the
// queue rings need no SQE128 (the driver reads only 16 bytes of `sqe->cmd`).
// ---------------------------------------------------------------------------
pub const UBLK_IO_FETCH_REQ: u32 = 0x20;
pub const UBLK_IO_COMMIT_AND_FETCH_REQ: u32 = 0x21;
pub const UBLK_IO_NEED_GET_DATA: u32 = 0x22;

/// Only ABORT means that no re-fetch.
pub const UBLK_IO_RES_OK: i32 = 0;
pub const UBLK_IO_RES_NEED_GET_DATA: i32 = 1;
pub const UBLK_IO_RES_ABORT: i32 = -libc::ENODEV;

/// mmap offset of the per-queue io descriptor arrays on /dev/ublkcN.
pub const UBLKSRV_CMD_BUF_OFFSET: u64 = 0;
pub const UBLKSRV_IO_BUF_OFFSET: u64 = 0x8000_0000;

/// Tag is 12 bits, so at most 4096 IOs per queue.
pub const UBLK_MAX_QUEUE_DEPTH: u16 = 4096;

// ---------------------------------------------------------------------------
// Feature flags (dev_info.flags).
// ---------------------------------------------------------------------------
pub const UBLK_F_SUPPORT_ZERO_COPY: u64 = 1 << 0;
pub const UBLK_F_URING_CMD_COMP_IN_TASK: u64 = 1 << 1;
pub const UBLK_F_NEED_GET_DATA: u64 = 1 << 2;
pub const UBLK_F_USER_RECOVERY: u64 = 1 << 3;
pub const UBLK_F_USER_RECOVERY_REISSUE: u64 = 1 << 4;
/// Added by the series: splice based zero copy.  The top bit (series v2), clear of
/// the bits mainline assigns from the bottom.
pub const UBLK_F_SPLICE_ZC: u64 = 1 << 63;
/// Bit 5: mainline's `UBLK_F_UNPRIVILEGED_DEV` (since 6.5), and v1 of the series'
/// `UBLK_F_SPLICE_ZC`.  Not a flag of this ABI: a 6.1 kernel with series v2 masks it,
/// and a server that asks for it must not get zero copy.  Named for the tests only.
pub const UBLK_F_BIT5_UNPRIVILEGED_DEV: u64 = 1 << 5;

/// Every flag this crate knows, with its name, in bit order.
pub const UBLK_F_NAMES: &[(u64, &str)] = &[
    (UBLK_F_SUPPORT_ZERO_COPY, "UBLK_F_SUPPORT_ZERO_COPY"),
    (
        UBLK_F_URING_CMD_COMP_IN_TASK,
        "UBLK_F_URING_CMD_COMP_IN_TASK",
    ),
    (UBLK_F_NEED_GET_DATA, "UBLK_F_NEED_GET_DATA"),
    (UBLK_F_USER_RECOVERY, "UBLK_F_USER_RECOVERY"),
    (UBLK_F_USER_RECOVERY_REISSUE, "UBLK_F_USER_RECOVERY_REISSUE"),
    (UBLK_F_SPLICE_ZC, "UBLK_F_SPLICE_ZC"),
];

/// Short, human names of the set flags (`UBLK_F_` stripped), joined by `|`;
/// unknown bits are shown in hex.
pub fn flag_names(flags: u64) -> String {
    let mut parts = Vec::new();
    let mut rest = flags;
    for &(bit, name) in UBLK_F_NAMES {
        if flags & bit != 0 {
            parts.push(name.trim_start_matches("UBLK_F_").to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join("|")
    }
}

// ---------------------------------------------------------------------------
// Device state.
// ---------------------------------------------------------------------------
pub const UBLK_S_DEV_DEAD: u16 = 0;
pub const UBLK_S_DEV_LIVE: u16 = 1;
pub const UBLK_S_DEV_QUIESCED: u16 = 2;

pub fn state_name(state: u16) -> &'static str {
    match state {
        UBLK_S_DEV_DEAD => "DEAD",
        UBLK_S_DEV_LIVE => "LIVE",
        UBLK_S_DEV_QUIESCED => "QUIESCED",
        _ => "UNKNOWN",
    }
}

// ---------------------------------------------------------------------------
// Request operations and flags (ublksrv_io_desc.op_flags).
// ---------------------------------------------------------------------------
pub const UBLK_IO_OP_READ: u8 = 0;
pub const UBLK_IO_OP_WRITE: u8 = 1;
pub const UBLK_IO_OP_FLUSH: u8 = 2;
pub const UBLK_IO_OP_DISCARD: u8 = 3;
pub const UBLK_IO_OP_WRITE_SAME: u8 = 4;
pub const UBLK_IO_OP_WRITE_ZEROES: u8 = 5;

pub const UBLK_IO_F_FAILFAST_DEV: u32 = 1 << 8;
pub const UBLK_IO_F_FAILFAST_TRANSPORT: u32 = 1 << 9;
pub const UBLK_IO_F_FAILFAST_DRIVER: u32 = 1 << 10;
pub const UBLK_IO_F_META: u32 = 1 << 11;
pub const UBLK_IO_F_FUA: u32 = 1 << 13;
pub const UBLK_IO_F_NOUNMAP: u32 = 1 << 15;
pub const UBLK_IO_F_SWAP: u32 = 1 << 16;

// ---------------------------------------------------------------------------
// Parameters.
// ---------------------------------------------------------------------------
pub const UBLK_ATTR_READ_ONLY: u32 = 1 << 0;
pub const UBLK_ATTR_ROTATIONAL: u32 = 1 << 1;
pub const UBLK_ATTR_VOLATILE_CACHE: u32 = 1 << 2;
pub const UBLK_ATTR_FUA: u32 = 1 << 3;

pub const UBLK_PARAM_TYPE_BASIC: u32 = 1 << 0;
pub const UBLK_PARAM_TYPE_DISCARD: u32 = 1 << 1;

// ---------------------------------------------------------------------------
// Splice zero copy (patches 1/4, 3/4 and 4/4).
// ---------------------------------------------------------------------------
/// io_uring splice flag (`include/uapi/linux/io_uring.h`, series v3; v2 had 0x10 in
/// the kernel-internal splice.h): a file to file splice at the explicit positions
/// `splice_off_in` and `off`.  Accepted by IORING_OP_SPLICE only; splice(2), tee(2),
/// vmsplice(2) and IORING_OP_TEE refuse it.
pub const SPLICE_F_DIRECT: u32 = 1 << 30;
/// io_uring splice flag (same header; v2: 0x20): with SPLICE_F_DIRECT, from a source
/// that lends its pages (/dev/ublkcN), the destination is read into them.  From any
/// other source it is EINVAL.
pub const SPLICE_F_READ_TO_READ: u32 = 1 << 29;

/// Bits of the tag in a splice position (queue depth at most 4096).
pub const UBLK_SPLICE_TAG_BITS: u32 = 12;
/// Bits of the byte offset into a request (at most 1 GiB per request).
pub const UBLK_SPLICE_BUF_BITS: u32 = 30;
/// Where q_id starts in a splice position.
pub const UBLK_SPLICE_QID_OFF: u32 = 42;
/// Largest request (bytes) one splice window can describe: 1 GiB.  The driver caps
/// max_io_buf_bytes to it in UBLK_F_SPLICE_ZC mode.
pub const UBLK_SPLICE_BUF_MAX_SIZE: u64 = 1 << UBLK_SPLICE_BUF_BITS;
/// What [`ublk_splice_pos`] gives for a tag or an offset out of its field's range: all
/// ones, which is -1 as a `loff_t`, so that a direct splice refuses it with EINVAL.
pub const UBLK_SPLICE_POS_INVALID: u64 = !0;

const SPLICE_TAG_MASK: u64 = (1 << UBLK_SPLICE_TAG_BITS) - 1;
const SPLICE_OFF_MASK: u64 = (1 << UBLK_SPLICE_BUF_BITS) - 1;

/// Splice position on /dev/ublkcN for (q_id, tag) at `offset` bytes into the request:
/// `(q_id << 42) | (tag << 30) | offset`, as the kernel header's `ublk_splice_pos()`
/// builds it.  A tag of 4096 or more, or an offset of 1 GiB or more, gives
/// [`UBLK_SPLICE_POS_INVALID`] (series v3; v2 masked the fields), never a position in
/// another request's window.  A valid position is a valid `loff_t` for every q_id.  Use
/// [`try_ublk_splice_pos`] to have out-of-range fields refused with a reason instead.
pub const fn ublk_splice_pos(q_id: u16, tag: u16, offset: u32) -> u64 {
    if tag as u64 > SPLICE_TAG_MASK || offset as u64 > SPLICE_OFF_MASK {
        return UBLK_SPLICE_POS_INVALID;
    }
    ((q_id as u64) << UBLK_SPLICE_QID_OFF)
        | ((tag as u64) << UBLK_SPLICE_BUF_BITS)
        | (offset as u64)
}

/// Why a splice position cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplicePosError {
    /// The tag does not fit UBLK_SPLICE_TAG_BITS.
    Tag(u16),
    /// offset (+ len) reaches past the request window of UBLK_SPLICE_BUF_MAX_SIZE.
    Offset { offset: u64, len: u64 },
}

impl std::fmt::Display for SplicePosError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            SplicePosError::Tag(t) => write!(
                f,
                "tag {t} does not fit in UBLK_SPLICE_TAG_BITS ({UBLK_SPLICE_TAG_BITS} bits)"
            ),
            SplicePosError::Offset { offset, len } => write!(
                f,
                "offset {offset} + length {len} reaches past a request's splice window \
                 (UBLK_SPLICE_BUF_MAX_SIZE = {UBLK_SPLICE_BUF_MAX_SIZE} bytes)"
            ),
        }
    }
}

impl std::error::Error for SplicePosError {}

/// Checked [`ublk_splice_pos`]: refuses a tag beyond UBLK_SPLICE_TAG_BITS and an offset
/// of 1 GiB or more (for which the unchecked one gives [`UBLK_SPLICE_POS_INVALID`]).
pub fn try_ublk_splice_pos(q_id: u16, tag: u16, offset: u64) -> Result<u64, SplicePosError> {
    try_ublk_splice_range(q_id, tag, offset, 0)
}

/// Checked position of a splice of `len` bytes at `offset`: the whole range
/// `[offset, offset + len)` must lie in the request's window.
pub fn try_ublk_splice_range(
    q_id: u16,
    tag: u16,
    offset: u64,
    len: u64,
) -> Result<u64, SplicePosError> {
    if u64::from(tag) > SPLICE_TAG_MASK {
        return Err(SplicePosError::Tag(tag));
    }
    let end = offset.checked_add(len);
    if offset > SPLICE_OFF_MASK || end.is_none_or(|e| e > UBLK_SPLICE_BUF_MAX_SIZE) {
        return Err(SplicePosError::Offset { offset, len });
    }
    Ok(ublk_splice_pos(q_id, tag, offset as u32))
}

/// q_id of a splice position (u32: a foreign position can name a queue beyond u16,
/// which the driver then rejects).
pub const fn ublk_splice_pos_to_qid(pos: u64) -> u32 {
    (pos >> UBLK_SPLICE_QID_OFF) as u32
}

/// Tag of a splice position.
pub const fn ublk_splice_pos_to_tag(pos: u64) -> u16 {
    ((pos >> UBLK_SPLICE_BUF_BITS) & SPLICE_TAG_MASK) as u16
}

/// Byte offset into the request of a splice position.
pub const fn ublk_splice_pos_to_off(pos: u64) -> u32 {
    (pos & SPLICE_OFF_MASK) as u32
}

// ---------------------------------------------------------------------------
// Structures.
// ---------------------------------------------------------------------------

/// Shipped in `sqe->cmd` of a control command (SQE128 ring).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ublksrv_ctrl_cmd {
    /// Sent to which device, must be valid (u32::MAX: any, for ADD_DEV).
    pub dev_id: u32,
    /// Sent to which queue, must be -1 if the cmd isn't for a queue.
    pub queue_id: u16,
    /// cmd specific buffer, can be IN or OUT.
    pub len: u16,
    pub addr: u64,
    /// Inline data.
    pub data: [u64; 2],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ublksrv_ctrl_dev_info {
    pub nr_hw_queues: u16,
    pub queue_depth: u16,
    pub state: u16,
    pub pad0: u16,

    pub max_io_buf_bytes: u32,
    pub dev_id: u32,

    pub ublksrv_pid: i32,
    pub pad1: u32,

    pub flags: u64,

    /// For ublksrv internal use, invisible to the ublk driver.
    pub ublksrv_flags: u64,

    pub reserved0: u64,
    pub reserved1: u64,
    pub reserved2: u64,
}

/// Described by the driver in the mmapped array, indexed by tag.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ublksrv_io_desc {
    /// op: bit 0-7, flags: bit 8-31
    pub op_flags: u32,
    pub nr_sectors: u32,
    /// Start sector for this io.
    pub start_sector: u64,
    /// Buffer address in the server's vm space, from the driver.
    pub addr: u64,
}

impl ublksrv_io_desc {
    pub const fn op(&self) -> u8 {
        (self.op_flags & 0xff) as u8
    }
    /// The UBLK_IO_F_* bits (still in their op_flags position).
    pub const fn flags(&self) -> u32 {
        self.op_flags & !0xff
    }
}

/// Issued to the driver via /dev/ublkcN (the 16-byte sqe->cmd).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ublksrv_io_cmd {
    pub q_id: u16,
    /// For fetch/commit which result.
    pub tag: u16,
    /// io result, valid for COMMIT* commands only.
    pub result: i32,
    /// Userspace buffer address in the server process, valid for FETCH* only.
    pub addr: u64,
}

impl ublksrv_io_cmd {
    /// The bytes to put in the SQE command area.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&self.q_id.to_ne_bytes());
        b[2..4].copy_from_slice(&self.tag.to_ne_bytes());
        b[4..8].copy_from_slice(&self.result.to_ne_bytes());
        b[8..16].copy_from_slice(&self.addr.to_ne_bytes());
        b
    }
}

impl ublksrv_ctrl_cmd {
    /// The bytes to put in the (80-byte) SQE128 command area.
    pub fn to_bytes(&self) -> [u8; 80] {
        let mut b = [0u8; 80];
        b[0..4].copy_from_slice(&self.dev_id.to_ne_bytes());
        b[4..6].copy_from_slice(&self.queue_id.to_ne_bytes());
        b[6..8].copy_from_slice(&self.len.to_ne_bytes());
        b[8..16].copy_from_slice(&self.addr.to_ne_bytes());
        b[16..24].copy_from_slice(&self.data[0].to_ne_bytes());
        b[24..32].copy_from_slice(&self.data[1].to_ne_bytes());
        b
    }
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ublk_param_basic {
    pub attrs: u32,
    pub logical_bs_shift: u8,
    pub physical_bs_shift: u8,
    pub io_opt_shift: u8,
    pub io_min_shift: u8,

    pub max_sectors: u32,
    pub chunk_sectors: u32,

    pub dev_sectors: u64,
    pub virt_boundary_mask: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ublk_param_discard {
    pub discard_alignment: u32,

    pub discard_granularity: u32,
    pub max_discard_sectors: u32,

    pub max_write_zeroes_sectors: u32,
    pub max_discard_segments: u16,
    pub reserved0: u16,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ublk_params {
    /// Total length of parameters; set for both SET_PARAMS and GET_PARAMS.
    pub len: u32,
    /// UBLK_PARAM_TYPE_* included.
    pub types: u32,
    pub basic: ublk_param_basic,
    pub discard: ublk_param_discard,
}

/// Size of one queue's io descriptor area as the driver rounds it (and as
/// mmap must ask for it): `round_up(depth * sizeof(ublksrv_io_desc), PAGE_SIZE)`.
pub fn queue_cmd_buf_size(depth: u16, page_size: usize) -> usize {
    let raw = usize::from(depth) * std::mem::size_of::<ublksrv_io_desc>();
    raw.div_ceil(page_size) * page_size
}

/// mmap offset of queue `q_id`'s descriptors: every queue gets a window of
/// the maximal size (`ublk_max_cmd_buf_size()`, i.e. for 4096 tags).
pub fn queue_cmd_buf_offset(q_id: u16, page_size: usize) -> u64 {
    UBLKSRV_CMD_BUF_OFFSET
        + u64::from(q_id) * queue_cmd_buf_size(UBLK_MAX_QUEUE_DEPTH, page_size) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn struct_sizes_match_kernel() {
        assert_eq!(size_of::<ublksrv_ctrl_cmd>(), 32);
        assert_eq!(size_of::<ublksrv_ctrl_dev_info>(), 64);
        assert_eq!(size_of::<ublksrv_io_desc>(), 24);
        assert_eq!(size_of::<ublksrv_io_cmd>(), 16);
        assert_eq!(size_of::<ublk_param_basic>(), 32);
        assert_eq!(size_of::<ublk_param_discard>(), 20);
        assert_eq!(size_of::<ublk_params>(), 64);
    }

    #[test]
    fn struct_offsets_match_kernel() {
        assert_eq!(offset_of!(ublksrv_ctrl_cmd, dev_id), 0);
        assert_eq!(offset_of!(ublksrv_ctrl_cmd, queue_id), 4);
        assert_eq!(offset_of!(ublksrv_ctrl_cmd, len), 6);
        assert_eq!(offset_of!(ublksrv_ctrl_cmd, addr), 8);
        assert_eq!(offset_of!(ublksrv_ctrl_cmd, data), 16);

        assert_eq!(offset_of!(ublksrv_ctrl_dev_info, nr_hw_queues), 0);
        assert_eq!(offset_of!(ublksrv_ctrl_dev_info, queue_depth), 2);
        assert_eq!(offset_of!(ublksrv_ctrl_dev_info, state), 4);
        assert_eq!(offset_of!(ublksrv_ctrl_dev_info, max_io_buf_bytes), 8);
        assert_eq!(offset_of!(ublksrv_ctrl_dev_info, dev_id), 12);
        assert_eq!(offset_of!(ublksrv_ctrl_dev_info, ublksrv_pid), 16);
        assert_eq!(offset_of!(ublksrv_ctrl_dev_info, flags), 24);
        assert_eq!(offset_of!(ublksrv_ctrl_dev_info, ublksrv_flags), 32);
        assert_eq!(offset_of!(ublksrv_ctrl_dev_info, reserved2), 56);

        assert_eq!(offset_of!(ublksrv_io_desc, op_flags), 0);
        assert_eq!(offset_of!(ublksrv_io_desc, nr_sectors), 4);
        assert_eq!(offset_of!(ublksrv_io_desc, start_sector), 8);
        assert_eq!(offset_of!(ublksrv_io_desc, addr), 16);

        assert_eq!(offset_of!(ublksrv_io_cmd, q_id), 0);
        assert_eq!(offset_of!(ublksrv_io_cmd, tag), 2);
        assert_eq!(offset_of!(ublksrv_io_cmd, result), 4);
        assert_eq!(offset_of!(ublksrv_io_cmd, addr), 8);

        assert_eq!(offset_of!(ublk_param_basic, attrs), 0);
        assert_eq!(offset_of!(ublk_param_basic, logical_bs_shift), 4);
        assert_eq!(offset_of!(ublk_param_basic, io_min_shift), 7);
        assert_eq!(offset_of!(ublk_param_basic, max_sectors), 8);
        assert_eq!(offset_of!(ublk_param_basic, chunk_sectors), 12);
        assert_eq!(offset_of!(ublk_param_basic, dev_sectors), 16);
        assert_eq!(offset_of!(ublk_param_basic, virt_boundary_mask), 24);

        assert_eq!(offset_of!(ublk_param_discard, discard_alignment), 0);
        assert_eq!(offset_of!(ublk_param_discard, discard_granularity), 4);
        assert_eq!(offset_of!(ublk_param_discard, max_discard_sectors), 8);
        assert_eq!(offset_of!(ublk_param_discard, max_write_zeroes_sectors), 12);
        assert_eq!(offset_of!(ublk_param_discard, max_discard_segments), 16);

        assert_eq!(offset_of!(ublk_params, len), 0);
        assert_eq!(offset_of!(ublk_params, types), 4);
        assert_eq!(offset_of!(ublk_params, basic), 8);
        assert_eq!(offset_of!(ublk_params, discard), 40);
    }

    #[test]
    fn cmd_bytes_layout() {
        let c = ublksrv_io_cmd {
            q_id: 0x0102,
            tag: 0x0304,
            result: -5,
            addr: 0x1122_3344_5566_7788,
        };
        let b = c.to_bytes();
        // Same bytes as a transmute of the repr(C) struct.
        // SAFETY: ublksrv_io_cmd is repr(C), 16 bytes without padding (checked in
        // struct_sizes_match_kernel), so every byte is initialized.
        let raw: [u8; 16] = unsafe { std::mem::transmute(c) };
        assert_eq!(b, raw);

        let cc = ublksrv_ctrl_cmd {
            dev_id: 7,
            queue_id: u16::MAX,
            len: 64,
            addr: 0xdead_beef,
            data: [42, 43],
        };
        // SAFETY: ublksrv_ctrl_cmd is repr(C), 32 bytes without padding.
        let raw: [u8; 32] = unsafe { std::mem::transmute(cc) };
        let b = cc.to_bytes();
        assert_eq!(&b[..32], &raw[..]);
        assert!(b[32..].iter().all(|&x| x == 0));
    }

    #[test]
    fn kernel_values() {
        assert_eq!(UBLK_CMD_ADD_DEV, 0x04);
        assert_eq!(UBLK_IO_FETCH_REQ, 0x20);
        assert_eq!(UBLK_IO_COMMIT_AND_FETCH_REQ, 0x21);
        assert_eq!(UBLK_IO_NEED_GET_DATA, 0x22);
        assert_eq!(UBLK_IO_RES_ABORT, -19);
        assert_eq!(UBLK_F_SPLICE_ZC, 0x8000_0000_0000_0000);
        assert_eq!(UBLK_F_BIT5_UNPRIVILEGED_DEV, 0x20);
        assert_eq!(UBLK_F_SPLICE_ZC & UBLK_F_BIT5_UNPRIVILEGED_DEV, 0);
        assert_eq!(SPLICE_F_DIRECT, 0x4000_0000);
        assert_eq!(SPLICE_F_READ_TO_READ, 0x2000_0000);
        assert_eq!(UBLK_SPLICE_POS_INVALID, u64::MAX);
        assert_eq!(UBLK_SPLICE_POS_INVALID as i64, -1);
        assert_eq!(UBLK_SPLICE_TAG_BITS, 12);
        assert_eq!(UBLK_SPLICE_BUF_BITS, 30);
        assert_eq!(UBLK_SPLICE_QID_OFF, 42);
        assert_eq!(UBLK_SPLICE_BUF_MAX_SIZE, 1 << 30);
        assert_eq!(UBLK_MAX_QUEUE_DEPTH, 1 << UBLK_SPLICE_TAG_BITS);
        assert_eq!(
            UBLK_SPLICE_QID_OFF,
            UBLK_SPLICE_BUF_BITS + UBLK_SPLICE_TAG_BITS
        );
        // The io_uring splice flags must not collide with splice(2)'s (MOVE 1, NONBLOCK 2,
        // MORE 4, GIFT 8) nor with SPLICE_F_FD_IN_FIXED (1 << 31).
        assert_eq!((SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ) & 0xf, 0);
        assert_eq!((SPLICE_F_DIRECT | SPLICE_F_READ_TO_READ) & (1 << 31), 0);
        assert_eq!(SPLICE_F_DIRECT & SPLICE_F_READ_TO_READ, 0);
    }

    #[test]
    fn pos_build_and_split() {
        assert_eq!(ublk_splice_pos(0, 0, 0), 0);
        assert_eq!(ublk_splice_pos(0, 1, 0), 1 << 30);
        assert_eq!(ublk_splice_pos(1, 0, 0), 1 << 42);
        assert_eq!(ublk_splice_pos(3, 5, 4096), (3 << 42) | ((5 << 30) + 4096));
        let p = ublk_splice_pos(2, 4095, (1 << 30) - 1);
        assert_eq!(ublk_splice_pos_to_qid(p), 2);
        assert_eq!(ublk_splice_pos_to_tag(p), 4095);
        assert_eq!(ublk_splice_pos_to_off(p), (1 << 30) - 1);
    }

    #[test]
    fn pos_round_trips() {
        for q in [0u16, 1, 2, 7, 255, 1023, u16::MAX] {
            for tag in [0u16, 1, 127, 128, 2048, 4095] {
                for off in [0u32, 1, 511, 512, 4096, 524_288, (1 << 30) - 1] {
                    let p = ublk_splice_pos(q, tag, off);
                    assert_eq!(ublk_splice_pos_to_qid(p), u32::from(q));
                    assert_eq!(ublk_splice_pos_to_tag(p), tag);
                    assert_eq!(ublk_splice_pos_to_off(p), off);
                    assert_eq!(try_ublk_splice_pos(q, tag, u64::from(off)), Ok(p));
                    // A valid loff_t.
                    assert!(p <= i64::MAX as u64);
                }
            }
        }
    }

    #[test]
    fn pos_out_of_range_is_invalid() {
        // v1 added the offset to the tag field (an offset of 1 GiB became tag + 1), v2
        // masked each field (an offset of 1 GiB became offset 0 of the same tag); v3 gives
        // UBLK_SPLICE_POS_INVALID, which no request's window holds and which a direct
        // splice refuses as the position -1.
        for (q, tag, off) in [
            (0u16, 0u16, 1u32 << 30),
            (0, 7, u32::MAX),
            (0, 4096, 0),
            (3, u16::MAX, 0),
            (u16::MAX, 4096, 1 << 30),
        ] {
            assert_eq!(
                ublk_splice_pos(q, tag, off),
                UBLK_SPLICE_POS_INVALID,
                "ublk_splice_pos({q}, {tag}, {off})"
            );
            assert!(try_ublk_splice_pos(q, tag, u64::from(off)).is_err());
        }
        // the last valid values of each field are still positions
        assert_ne!(
            ublk_splice_pos(u16::MAX, 4095, (1 << 30) - 1),
            UBLK_SPLICE_POS_INVALID
        );
        assert!(ublk_splice_pos(u16::MAX, 4095, (1 << 30) - 1) <= i64::MAX as u64);
    }

    #[test]
    fn pos_checked_refuses_out_of_range() {
        assert!(try_ublk_splice_pos(0, 4095, (1 << 30) - 1).is_ok());
        assert_eq!(
            try_ublk_splice_pos(0, 4096, 0),
            Err(SplicePosError::Tag(4096))
        );
        assert_eq!(
            try_ublk_splice_pos(0, 0, 1 << 30),
            Err(SplicePosError::Offset {
                offset: 1 << 30,
                len: 0
            })
        );
        assert_eq!(try_ublk_splice_pos(1, 2, 3), Ok(ublk_splice_pos(1, 2, 3)));
        // Ranges: the last byte of the window is the limit.
        assert!(try_ublk_splice_range(0, 1, (1 << 30) - 4096, 4096).is_ok());
        assert!(try_ublk_splice_range(0, 1, (1 << 30) - 4096, 4097).is_err());
        assert!(try_ublk_splice_range(0, 1, 0, 1 << 30).is_ok());
        assert!(try_ublk_splice_range(0, 1, 1, u64::MAX).is_err());
        let e = try_ublk_splice_pos(0, 5000, 0).unwrap_err().to_string();
        assert!(e.contains("UBLK_SPLICE_TAG_BITS"), "{e}");
        // Windows of consecutive tags and queues are adjacent, never overlapping.
        assert_eq!(
            ublk_splice_pos(0, 1, 0) - ublk_splice_pos(0, 0, (1 << 30) - 1),
            1
        );
        assert_eq!(
            ublk_splice_pos(1, 0, 0) - ublk_splice_pos(0, 4095, (1 << 30) - 1),
            1
        );
    }

    #[test]
    fn pos_split_of_foreign_values() {
        // Positions a caller did not build with ublk_splice_pos still split into fields
        // the driver range-checks; UBLK_SPLICE_POS_INVALID names a q_id no device has.
        assert_eq!(u64::MAX, UBLK_SPLICE_POS_INVALID);
        assert_eq!(ublk_splice_pos_to_qid(u64::MAX), (1 << 22) - 1);
        assert_eq!(ublk_splice_pos_to_tag(u64::MAX), 4095);
        assert_eq!(ublk_splice_pos_to_off(u64::MAX), (1 << 30) - 1);
    }

    #[test]
    fn desc_op_and_flags() {
        let d = ublksrv_io_desc {
            op_flags: u32::from(UBLK_IO_OP_WRITE_ZEROES) | UBLK_IO_F_NOUNMAP | UBLK_IO_F_FUA,
            ..Default::default()
        };
        assert_eq!(d.op(), UBLK_IO_OP_WRITE_ZEROES);
        assert_eq!(d.flags(), UBLK_IO_F_NOUNMAP | UBLK_IO_F_FUA);
    }

    #[test]
    fn cmd_buf_geometry() {
        assert_eq!(queue_cmd_buf_size(1, 4096), 4096);
        assert_eq!(queue_cmd_buf_size(128, 4096), 4096); // 3072 bytes
        assert_eq!(queue_cmd_buf_size(171, 4096), 8192); // 4104 bytes
        assert_eq!(queue_cmd_buf_size(4096, 4096), 98_304);
        assert_eq!(queue_cmd_buf_offset(0, 4096), 0);
        assert_eq!(queue_cmd_buf_offset(1, 4096), 98_304);
        assert_eq!(queue_cmd_buf_offset(3, 4096), 3 * 98_304);
    }

    #[test]
    fn names() {
        assert_eq!(flag_names(0), "-");
        assert_eq!(
            flag_names(UBLK_F_SPLICE_ZC | UBLK_F_NEED_GET_DATA),
            "NEED_GET_DATA|SPLICE_ZC"
        );
        assert_eq!(flag_names(1 << 63), "SPLICE_ZC");
        assert_eq!(flag_names(UBLK_F_BIT5_UNPRIVILEGED_DEV), "0x20");
        assert_eq!(
            flag_names(UBLK_F_SPLICE_ZC | UBLK_F_BIT5_UNPRIVILEGED_DEV | 1),
            "SUPPORT_ZERO_COPY|SPLICE_ZC|0x20"
        );
        assert_eq!(flag_names(1 << 40), "0x10000000000");
        assert_eq!(state_name(UBLK_S_DEV_LIVE), "LIVE");
    }
}
