//! A ublk server for Linux 6.1 with the splice zero-copy series
//! (UBLK_F_SPLICE_ZC), and the pieces the test suite needs.
//!
//! - [`uapi`]: the ABI, constants and encodings in one place.
//! - [`buf`]: the aligned buffer for O_DIRECT I/O.
//! - [`ctrl`]: the control path (/dev/ublk-control).
//! - [`queue`]: one thread and one io_uring per hardware queue.
//! - [`targets`]: null, loop and mirror targets, request-to-operation mapping.
//! - [`validate`]: the rules for a device's parameters (CLI and library alike).
//! - [`device`]: a device served in this process ([`Device::start`] for a built-in
//!   target, [`Device::start_with`] for any [`targets::Target`]).
//! - [`server`], [`admin`], [`state`], [`cli`]: the `ublk` command.

pub mod admin;
pub mod buf;
pub mod cli;
pub mod ctrl;
pub mod device;
pub mod queue;
pub mod server;
pub mod state;
pub mod targets;
pub mod uapi;
pub mod validate;

pub use device::{Device, DeviceConfig, TargetConfig};
