//! Host side of the test harness: boots a kernel in QEMU and judges what it printed.

pub mod config_check;
