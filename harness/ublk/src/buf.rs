//! [`AlignedBuf`]: the workspace's one page-aligned, zero-filled buffer (O_DIRECT I/O
//! needs memory aligned to the logical block size; page alignment covers every device).

use std::alloc::Layout;

/// Alignment of every [`AlignedBuf`].
pub const ALIGN: usize = 4096;

/// A zero-filled heap buffer aligned to [`ALIGN`] bytes.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: the buffer is plain bytes owned by this value alone (no interior sharing); it may
// move to and be used from another thread like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only read the bytes (mutation needs &mut self).
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes (at least one page is allocated).  Panics only when the
    /// allocator fails, as `Vec` does.
    pub fn new(len: usize) -> AlignedBuf {
        let layout = match Layout::from_size_align(len.max(ALIGN), ALIGN) {
            Ok(l) => l,
            Err(_) => panic!("AlignedBuf of {len} bytes: size overflows"),
        };
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len, layout }
    }

    /// `len` bytes, each `byte`.
    pub fn filled(len: usize, byte: u8) -> AlignedBuf {
        let mut b = AlignedBuf::new(len);
        b.as_mut_slice().fill(byte);
        b
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points at an allocation of at least `len` initialized (zeroed)
        // bytes that lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for len in [0usize, 1, 512, 4096, 4097, 1 << 20] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.as_mut_ptr() as usize % ALIGN, 0);
            assert_eq!(b.len(), len);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice().fill(7);
            assert!(b.as_slice().iter().all(|&x| x == 7));
        }
        assert!(AlignedBuf::filled(100, 3)
            .as_slice()
            .iter()
            .all(|&x| x == 3));
    }
}
