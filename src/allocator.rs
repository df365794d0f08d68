//! The process's memory allocator: mimalloc, called the way a C program would call it.
//!
//! A miss allocates a couple of dozen small blocks that live for one exchange, many of them in
//! flight at once (200 outstanding queries in the benchmark). glibc's malloc spends about 20%
//! of a miss's instructions on them, and musl's (the static router builds) is slower still;
//! mimalloc's per-thread free lists take a few instructions each.
//!
//! The `mimalloc` crate's allocator passes every request to `mi_malloc_aligned`, whose
//! mimalloc 3 implementation falls back to a slower generic path for most sizes. This one
//! calls plain `mi_malloc` whenever that already guarantees the alignment asked for: the same
//! rule the standard library's `System` allocator applies to `malloc` (an alignment up to the
//! platform's minimum, and no larger than the size). mimalloc is a conforming `malloc`, so the
//! rule holds for it too; anything else goes to the aligned functions.
//!
//! Built with `MI_NO_THP` (the `no_thp` feature): mimalloc would otherwise ask for transparent
//! huge pages on its arenas, which made an idle proxy 10 MB larger.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment `malloc` guarantees for any size at least this large: 16 bytes on 64-bit
/// platforms, 8 on 32-bit ones (as in the standard library's `System` allocator).
const MIN_ALIGN: usize = if cfg!(target_pointer_width = "64") {
    16
} else {
    8
};

/// mimalloc as the global allocator (`#[global_allocator]` in `main.rs`).
pub struct MiMalloc;

/// Whether plain `malloc` already returns memory aligned as `layout` asks.
fn malloc_suffices(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: every function forwards to mimalloc's, which return null on failure and memory
// aligned as asked (plain `mi_malloc` only when `malloc_suffices`); blocks from either family
// are freed with `mi_free` and resized by `mi_realloc[_aligned]`, as mimalloc documents.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if malloc_suffices(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if malloc_suffices(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (GlobalAlloc's contract).
        unsafe {
            if malloc_suffices(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates, fills, grows, shrinks and frees blocks of many sizes and alignments, through
    /// both paths, checking alignment and that contents survive `realloc`.
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_contents() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 3, 7, 8, 12, 16, 24, 40, 48, 100, 1000, 5000, 70_000] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: non-zero sizes; each block is used within its size and freed once,
                // with the layout it has at the time.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    for i in 0..size {
                        *p.add(i) = (i % 251) as u8;
                    }
                    // Grown, then shrunk: aligned each time, the bytes kept.
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "grown {size} align {align}");
                    let grown_layout = Layout::from_size_align(size * 3, align).unwrap();
                    let half = size.div_ceil(2);
                    let shrunk = a.realloc(grown, grown_layout, half);
                    assert_eq!(shrunk as usize % align, 0, "shrunk {size} align {align}");
                    assert!((0..half).all(|i| *shrunk.add(i) == (i % 251) as u8));
                    a.dealloc(shrunk, Layout::from_size_align(half, align).unwrap());

                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }

    #[test]
    fn plain_malloc_only_where_it_guarantees_the_alignment() {
        assert!(malloc_suffices(8, 8));
        assert!(malloc_suffices(MIN_ALIGN, MIN_ALIGN));
        assert!(malloc_suffices(1, 1));
        // An alignment above the size: malloc may hand back a smaller bin's alignment.
        assert!(!malloc_suffices(8, 4));
        assert!(!malloc_suffices(MIN_ALIGN * 2, 4096));
    }
}
