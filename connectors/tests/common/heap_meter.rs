//! A per-thread heap meter for tests that bound memory: a global allocator
//! that forwards to the system one and counts, per thread, the bytes held,
//! the peak, and the bytes allocated in all (tests running in parallel do
//! not see each other's allocations). A test binary installs it with
//! `#[global_allocator] static ALLOCATOR: heap_meter::MeteredAllocator = heap_meter::MeteredAllocator;`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct MeteredAllocator;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
    static ALLOCATED_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn meter(delta: isize) {
    if delta > 0 {
        let _ = ALLOCATED_BYTES
            .try_with(|total| total.set(total.get().saturating_add(delta.unsigned_abs())));
    }
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// meter only touches const-initialised thread-locals (no allocation).
unsafe impl GlobalAlloc for MeteredAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            meter(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            meter(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        meter(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            meter(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Runs `f`; returns its result, the most heap this thread held at once
/// above what it held before, and the bytes it allocated in all.
pub fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let base = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|p| p.set(base));
    let allocated_before = ALLOCATED_BYTES.with(Cell::get);
    let out = f();
    let peak = usize::try_from(PEAK_BYTES.with(Cell::get) - base).unwrap_or(0);
    (
        out,
        peak,
        ALLOCATED_BYTES.with(Cell::get) - allocated_before,
    )
}

/// Runs `f` and returns its result and the most heap this thread held at
/// once meanwhile, above what it held before.
pub fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let (out, peak, _) = measured(f);
    (out, peak)
}

/// Runs `f` and returns its result and how many bytes this thread
/// allocated meanwhile (freed or not): the work a parser did, by volume.
pub fn allocated_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let (out, _, allocated) = measured(f);
    (out, allocated)
}
