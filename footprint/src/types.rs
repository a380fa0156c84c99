//! `size_of` of the core types that the relay stores per message, per subscription or per
//! connection: a growing type costs memory on every one of them.

use core::mem::size_of;

use fastpubsub_core::frame::{Command, Deliver, DeliverView, FrameError, Mode, Publish, Reply};
use fastpubsub_core::pattern::{InsertError, PatternError, SubIndex};

/// `(budget key, type name, size in bytes)` for each measured type.
pub fn sizes() -> Vec<(&'static str, &'static str, usize)> {
    vec![
        (
            "frame_publish",
            "frame::Publish<'_>",
            size_of::<Publish<'static>>(),
        ),
        (
            "frame_deliver",
            "frame::Deliver<'_>",
            size_of::<Deliver<'static>>(),
        ),
        (
            "frame_deliver_view",
            "frame::DeliverView<'_>",
            size_of::<DeliverView<'static>>(),
        ),
        (
            "frame_command",
            "frame::Command<'_>",
            size_of::<Command<'static>>(),
        ),
        (
            "frame_reply",
            "frame::Reply<'_>",
            size_of::<Reply<'static>>(),
        ),
        ("frame_mode", "frame::Mode", size_of::<Mode>()),
        ("frame_error", "frame::FrameError", size_of::<FrameError>()),
        (
            "pattern_error",
            "pattern::PatternError",
            size_of::<PatternError>(),
        ),
        (
            "pattern_insert_error",
            "pattern::InsertError",
            size_of::<InsertError>(),
        ),
        (
            "pattern_sub_index_u64",
            "pattern::SubIndex<u64>",
            size_of::<SubIndex<u64>>(),
        ),
    ]
}
