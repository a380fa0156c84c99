//! `fastpubsub-core`: the sans-IO, `no_std` heart of the FastPubSub relay.
//!
//! Pure logic with no I/O, no clock and no entropy of its own: the caller passes
//! time in and owns every output buffer. Modules follow the layers of the relay:
//!
//! - [`limits`]: the client contract's size limits, defined once for every module.
//! - [`frame`]: the LLPS v0.1 client wire contract (publish, commands, deliver, replies).
//! - [`pattern`]: channel/pattern validation, matching, containment and a subscription index.
//! - [`route`]: the latency distance-vector routing table.
//! - [`mesh`]: relay-to-relay wire messages.
//! - [`ticket`]: access tickets and their status records.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod frame;
pub mod limits;
pub mod mesh;
pub mod pattern;
pub mod route;
pub mod ticket;
