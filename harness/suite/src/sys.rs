//! Thin wrappers of the splice family of syscalls that pass every flag bit through
//! unchanged (the kernel, not a wrapper, must be the one to refuse a flag).
//!
//! Each returns the byte count or the errno, as the kernel said it.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;

/// The result of one syscall: a byte count, or the errno.
pub type SysResult = Result<usize, Errno>;

fn check(ret: isize) -> SysResult {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

fn off_ptr(off: &mut Option<i64>) -> *mut libc::loff_t {
    match off {
        Some(v) => v as *mut i64 as *mut libc::loff_t,
        None => ptr::null_mut(),
    }
}

/// splice(2). An offset given as `Some` is passed by pointer and updated by the kernel.
pub fn splice(
    fd_in: BorrowedFd<'_>,
    off_in: &mut Option<i64>,
    fd_out: BorrowedFd<'_>,
    off_out: &mut Option<i64>,
    len: usize,
    flags: u32,
) -> SysResult {
    // SAFETY: the fds are borrowed and valid; the offsets are valid for writes or null.
    let ret = unsafe {
        libc::splice(
            fd_in.as_raw_fd(),
            off_ptr(off_in),
            fd_out.as_raw_fd(),
            off_ptr(off_out),
            len,
            flags,
        )
    };
    check(ret)
}

/// tee(2).
pub fn tee(fd_in: BorrowedFd<'_>, fd_out: BorrowedFd<'_>, len: usize, flags: u32) -> SysResult {
    // SAFETY: plain syscall on borrowed fds.
    let ret = unsafe { libc::tee(fd_in.as_raw_fd(), fd_out.as_raw_fd(), len, flags) };
    check(ret)
}

/// vmsplice(2) of `bufs` into (or, on a read end, out of) the pipe `fd`.
pub fn vmsplice(fd: BorrowedFd<'_>, bufs: &[&[u8]], flags: u32) -> SysResult {
    let iov: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: the iovecs point at live slices for the duration of the call; for a write
    // end the kernel only reads them.
    let ret = unsafe { libc::vmsplice(fd.as_raw_fd(), iov.as_ptr(), iov.len(), flags) };
    check(ret)
}

/// sendfile(2). `offset` as `Some` is passed by pointer and updated.
pub fn sendfile(
    out_fd: BorrowedFd<'_>,
    in_fd: BorrowedFd<'_>,
    offset: &mut Option<i64>,
    count: usize,
) -> SysResult {
    let p = match offset {
        Some(v) => v as *mut i64 as *mut libc::off_t,
        None => ptr::null_mut(),
    };
    // SAFETY: the fds are valid; `p` is valid for writes or null.
    let ret = unsafe { libc::sendfile(out_fd.as_raw_fd(), in_fd.as_raw_fd(), p, count) };
    check(ret)
}

/// copy_file_range(2).
pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: &mut Option<i64>,
    fd_out: BorrowedFd<'_>,
    off_out: &mut Option<i64>,
    len: usize,
    flags: u32,
) -> SysResult {
    // SAFETY: the fds are valid; the offsets are valid for writes or null.
    let ret = unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            off_ptr(off_in),
            fd_out.as_raw_fd(),
            off_ptr(off_out),
            len,
            flags,
        )
    };
    check(ret)
}

/// The bytes waiting in a pipe (FIONREAD).
pub fn pipe_bytes(fd: BorrowedFd<'_>) -> Result<usize, Errno> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

/// Sets a pipe's capacity (F_SETPIPE_SZ) and returns the capacity the kernel chose.
pub fn set_pipe_size(fd: BorrowedFd<'_>, size: usize) -> Result<usize, Errno> {
    // SAFETY: plain fcntl.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

/// The file position of `fd` (lseek(fd, 0, SEEK_CUR)).
pub fn file_pos(fd: BorrowedFd<'_>) -> Result<i64, Errno> {
    // SAFETY: plain lseek.
    let ret = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_CUR) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// lseek(2): the new position, or the errno (ESPIPE for a file without a position).
pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: libc::c_int) -> Result<i64, Errno> {
    // SAFETY: plain lseek.
    let ret = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// A timerfd (timerfd_create(2), CLOCK_MONOTONIC): a file open for reading and writing
/// whose file operations have neither `->read_iter` nor `->write_iter` on 6.1 (only
/// `->read`), for the destination checks of a direct splice.
pub fn timerfd() -> Result<std::os::fd::OwnedFd, Errno> {
    // SAFETY: plain timerfd_create; the descriptor is owned by the caller from here on.
    let ret = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ret) })
    }
}

/// The errno's symbolic name (`EINVAL`), or `errno N` for one without a name here.
pub fn errno_name(e: Errno) -> String {
    match e {
        Errno::UnknownErrno => "errno ?".to_string(),
        _ => format!("{e:?}"),
    }
}

/// The name of a raw errno value (`22` -> `EINVAL`).
pub fn raw_errno_name(n: i32) -> String {
    match Errno::from_raw(n) {
        Errno::UnknownErrno => format!("errno {n}"),
        e => format!("{e:?}"),
    }
}

/// A negative CQE result as an errno.
pub fn cqe_errno(res: i32) -> Option<Errno> {
    (res < 0).then(|| Errno::from_raw(-res))
}

/// A CQE result for humans: `8` or `-EINVAL`.
pub fn cqe_display(res: i32) -> String {
    match cqe_errno(res) {
        Some(_) => format!("-{}", raw_errno_name(-res)),
        None => res.to_string(),
    }
}
