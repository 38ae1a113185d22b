//! Host side of the test harness: boots a kernel in QEMU, runs a command in the guest and
//! judges what the kernel printed; and the guest's init.

pub mod accel;
pub mod cli;
pub mod config_check;
pub mod console;
pub mod init;
pub mod job;
pub mod qemu;
pub mod report;
pub mod run;
pub mod verdict;
