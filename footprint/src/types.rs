//! `size_of` of the core types that the relay stores per message, per subscription or per
//! connection: a growing type costs memory on every one of them.

use core::mem::size_of;

use fastpubsub_core::frame::{Command, Deliver, DeliverView, FrameError, Mode, Publish, Reply};
use fastpubsub_core::mesh::{Data, Hello, Probe};
use fastpubsub_core::pattern::{InsertError, PatternError, SubIndex};
use fastpubsub_core::route::{LinkMeasurement, RouteInfo, RouteTable, Update};
use fastpubsub_core::ticket::{Claims, Grant, TicketBuf};

/// `(budget key, type name, size in bytes)` for each measured type.
pub fn sizes() -> Vec<(&'static str, &'static str, usize)> {
    macro_rules! row {
        ($key:literal, $name:literal, $t:ty) => {
            ($key, $name, size_of::<$t>())
        };
    }
    vec![
        row!("frame_publish", "frame::Publish<'_>", Publish<'static>),
        row!("frame_deliver", "frame::Deliver<'_>", Deliver<'static>),
        row!(
            "frame_deliver_view",
            "frame::DeliverView<'_>",
            DeliverView<'static>
        ),
        row!("frame_command", "frame::Command<'_>", Command<'static>),
        row!("frame_reply", "frame::Reply<'_>", Reply<'static>),
        row!("frame_mode", "frame::Mode", Mode),
        row!("frame_error", "frame::FrameError", FrameError),
        row!("pattern_error", "pattern::PatternError", PatternError),
        row!("pattern_insert_error", "pattern::InsertError", InsertError),
        row!(
            "pattern_sub_index_u64",
            "pattern::SubIndex<u64>",
            SubIndex<u64>
        ),
        // The table's rows are on the heap and grow with the relays known (16 bytes per
        // destination × neighbour slot, ~190 bytes per destination): this is its fixed part.
        row!("route_table", "route::RouteTable", RouteTable),
        row!("route_info", "route::RouteInfo", RouteInfo),
        row!("route_update", "route::Update", Update),
        row!(
            "route_link_measurement",
            "route::LinkMeasurement",
            LinkMeasurement
        ),
        row!("mesh_data", "mesh::Data<'_>", Data<'static>),
        row!("mesh_hello", "mesh::Hello<'_>", Hello<'static>),
        row!("mesh_probe", "mesh::Probe", Probe),
        row!("ticket_claims", "ticket::Claims<'_>", Claims<'static>),
        row!("ticket_grant", "ticket::Grant<'_>", Grant<'static>),
        row!("ticket_buf", "ticket::TicketBuf", TicketBuf),
    ]
}
