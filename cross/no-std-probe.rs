//! Compiled by `cross/check-no-std` against the `--no-default-features` build of
//! `fastpubsub-core`. It defines its own panic handler, so it compiles only when no crate in
//! core's graph links `std` (std brings its own: rustc reports E0152, duplicate lang item
//! `panic_impl`). This is the bare-metal check available without a thumbv7 target.
#![no_std]

pub use fastpubsub_core as _core;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
