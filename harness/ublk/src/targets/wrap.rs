//! A target made of another one with a few of its methods changed: [`Wrap`] forwards
//! every method of [`Target`] to the inner target unless its [`Hooks`] say otherwise,
//! so a target that changes one thing (holds a request, fails one, checks what another
//! did) writes only that thing.

use super::{Action, Io, IoOp, LoopTarget, Target};
use crate::uapi::ublk_params;

/// The methods of a [`Wrap`] that may differ from its inner target's.  Each gets the
/// inner target; every one but [`Hooks::kind`] defaults to it.
pub trait Hooks<T: Target>: Send + Sync {
    /// The wrapped target's name.
    fn kind(&self) -> &'static str;

    fn backing(&self, inner: &T) -> String {
        inner.backing()
    }

    fn dev_size(&self, inner: &T) -> u64 {
        inner.dev_size()
    }

    fn params(&self, inner: &T, max_io_buf_bytes: u32) -> ublk_params {
        inner.params(max_io_buf_bytes)
    }

    fn queue_io(&self, inner: &T, io: &mut Io) -> Action {
        inner.queue_io(io)
    }

    fn io_done(&self, inner: &T, io: &mut Io, op: &IoOp, res: i32) -> Action {
        inner.io_done(io, op, res)
    }
}

/// `inner` with the hooks `hooks`: a [`Target`].  Derefs to the hooks, so a test calls
/// its hooks' own methods on the wrapped target.
pub struct Wrap<H, T = LoopTarget> {
    inner: T,
    hooks: H,
}

impl<H, T> Wrap<H, T> {
    pub fn new(inner: T, hooks: H) -> Wrap<H, T> {
        Wrap { inner, hooks }
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    pub fn hooks(&self) -> &H {
        &self.hooks
    }
}

impl<H, T> std::ops::Deref for Wrap<H, T> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.hooks
    }
}

impl<T: Target, H: Hooks<T>> Target for Wrap<H, T> {
    fn kind(&self) -> &'static str {
        self.hooks.kind()
    }

    fn backing(&self) -> String {
        self.hooks.backing(&self.inner)
    }

    fn dev_size(&self) -> u64 {
        self.hooks.dev_size(&self.inner)
    }

    fn params(&self, max_io_buf_bytes: u32) -> ublk_params {
        self.hooks.params(&self.inner, max_io_buf_bytes)
    }

    fn queue_io(&self, io: &mut Io) -> Action {
        self.hooks.queue_io(&self.inner, io)
    }

    fn io_done(&self, io: &mut Io, op: &IoOp, res: i32) -> Action {
        self.hooks.io_done(&self.inner, io, op, res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::{DataRef, NullTarget, Request};
    use crate::uapi::*;

    struct Plain;

    impl Hooks<NullTarget> for Plain {
        fn kind(&self) -> &'static str {
            "plain"
        }
    }

    /// Fails every WRITE with EROFS, and commits a READ's fill as 512 bytes more.
    struct Odd;

    impl Hooks<NullTarget> for Odd {
        fn kind(&self) -> &'static str {
            "odd"
        }

        fn queue_io(&self, inner: &NullTarget, io: &mut Io) -> Action {
            if io.req.op == UBLK_IO_OP_WRITE {
                return Action::Commit(-libc::EROFS);
            }
            inner.queue_io(io)
        }

        fn io_done(&self, inner: &NullTarget, io: &mut Io, op: &IoOp, res: i32) -> Action {
            match inner.io_done(io, op, res) {
                Action::Commit(r) if r > 0 => Action::Commit(r + 512),
                a => a,
            }
        }
    }

    fn io(op: u8) -> Io {
        Io::new(
            Request {
                q_id: 0,
                tag: 1,
                op,
                flags: 0,
                start_sector: 0,
                nr_sectors: 8,
            },
            DataRef::ZeroCopy { char_fd: 3 },
        )
    }

    #[test]
    fn forwards_what_it_does_not_change() {
        let n = NullTarget::new(1 << 20).unwrap();
        let (size, params) = (n.dev_size(), n.params(1 << 19));
        let w = Wrap::new(n, Plain);
        assert_eq!(w.kind(), "plain");
        assert_eq!(w.backing(), "-");
        assert_eq!(w.dev_size(), size);
        assert_eq!(w.params(1 << 19), params);
        for op in [UBLK_IO_OP_READ, UBLK_IO_OP_WRITE, UBLK_IO_OP_FLUSH] {
            let (mut a, mut b) = (io(op), io(op));
            assert_eq!(w.queue_io(&mut a), w.inner().queue_io(&mut b));
        }
        let mut a = io(UBLK_IO_OP_READ);
        let Action::Submit(op) = w.queue_io(&mut a) else {
            panic!("a null READ submits")
        };
        assert_eq!(w.io_done(&mut a, &op, 4096), Action::Commit(4096));
    }

    #[test]
    fn hooks_change_both_halves() {
        let w = Wrap::new(NullTarget::new(1 << 20).unwrap(), Odd);
        assert_eq!(
            w.queue_io(&mut io(UBLK_IO_OP_WRITE)),
            Action::Commit(-libc::EROFS)
        );
        let mut r = io(UBLK_IO_OP_READ);
        let Action::Submit(op) = w.queue_io(&mut r) else {
            panic!("a null READ submits")
        };
        assert!(matches!(w.io_done(&mut r, &op, 1024), Action::Continue(_)));
        assert_eq!(w.io_done(&mut r, &op, 3072), Action::Commit(4096 + 512));
    }
}
