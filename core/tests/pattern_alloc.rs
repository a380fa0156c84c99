//! Proves that validation, matching, containment and index lookups never allocate.
//!
//! A counting global allocator counts allocations made by the current thread while
//! counting is switched on (a `const` thread-local, which itself never allocates), so
//! the test harness's own threads do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use fastpubsub_core::pattern::{contains, matches, validate_channel, validate_pattern};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: thread-locals may be gone while a thread shuts down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every call is passed to `System` unchanged; we only count.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    COUNT.with(Cell::get)
}

const PATTERNS: &[&str] = &[
    "public.#",
    "public.*",
    "public.chat.room1",
    "#",
    "*.chat.#",
    "a.b.c.d.e.f.g.h",
    "a.*.c.*.e.#",
    "a-very-long-segment-that-does-not-fit-inline.x",
];
const CHANNELS: &[&str] = &[
    "public",
    "public.chat.room1",
    "a.b.c.d.e.f.g.h",
    "a.x.c.y.e",
    "a-very-long-segment-that-does-not-fit-inline.x",
    "nothing.here",
    "",
    "a..b",
];

#[test]
fn counter_sees_allocations() {
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
}

#[test]
fn validation_matching_and_containment_do_not_allocate() {
    let n = allocations(|| {
        for p in PATTERNS {
            assert!(validate_pattern(p).is_ok());
            let _ = validate_channel(p);
            for c in CHANNELS {
                std::hint::black_box(matches(p, c));
            }
            for q in PATTERNS {
                std::hint::black_box(contains(p, q));
            }
        }
    });
    assert_eq!(n, 0);
}

#[cfg(feature = "alloc")]
#[test]
fn index_lookups_do_not_allocate() {
    use fastpubsub_core::pattern::SubIndex;
    let mut index = SubIndex::new(1000);
    let inserts = allocations(|| {
        for (i, p) in PATTERNS.iter().enumerate() {
            for v in 0..3u64 {
                assert_eq!(index.insert(p, v * 100 + i as u64), Ok(true));
            }
        }
        // Enough siblings to use the large children list.
        for r in 0..100u64 {
            assert_eq!(index.insert(&format!("public.r{r}"), r), Ok(true));
        }
    });
    assert!(inserts > 0);
    let mut found = 0usize;
    let lookups = allocations(|| {
        for c in CHANNELS.iter().copied().chain(["public.r7", "public.r99"]) {
            index.for_each_match(c, |p, v| {
                std::hint::black_box((p, v));
                found += 1;
            });
            std::hint::black_box(index.has_match(c));
        }
    });
    assert_eq!(lookups, 0);
    assert!(found > 20, "the lookups did find matches ({found})");
}
