//! The in-guest test suite of the ublk splice zero-copy series.
//!
//! The library holds what the tests in `tests/` share, one concern per module, and the
//! code of the `ublk-suite` runner (`runner`). Test files:
//! - `tests/splice_direct.rs`: IORING_OP_SPLICE with SPLICE_F_DIRECT and
//!   SPLICE_F_READ_TO_READ (patches 1 and 3), and the syscalls that must refuse them;
//! - `tests/tracefs.rs`: the kprobe helper the zero-copy proofs rely on;
//! - `tests/ublk_*.rs`: ublk devices in copy and splice zero-copy mode (patch 4),
//!   built on the `ublk` crate.
//!
//! Patch 2 is checked by the `splice-transcript` program, whose output must be the same
//! on the base and the patched kernel.

pub mod blockio;
pub mod check;
pub mod control;
pub mod features;
pub mod files;
pub mod flags;
pub mod guest;
pub mod kmsg;
pub mod label;
pub mod loopdev;
pub mod net;
pub mod runner;
pub mod scratch;
pub mod sys;
pub mod targets;
pub mod tracefs;
pub mod transcript;
pub mod ublkcli;
pub mod ublkdev;
pub mod uring;
pub mod watchdog;
