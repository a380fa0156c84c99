//! Publishes and forwarded data: a publish goes to every relay with matching interest (or
//! one, for the deliver-one modes: [`forward::choose`]), grouped by next hop: one copy per
//! next hop listing its destinations ([`forward::plan`]); each relay delivers if it is a
//! destination (once: [`Dedup`](crate::mesh::dedup::Dedup)) and re-splits the rest, while the
//! hop limit lasts.

use bytes::Bytes;
use fastpubsub_core::mesh::{self, Data, Message};
use fastpubsub_core::route::RelayId;

use super::{MeshEvent, MeshNode, Publish, TransmitKind};
use crate::mesh::forward::{self, Choice};

impl MeshNode {
    pub(super) fn on_publish(&mut self, p: Publish<'_>, _now: u64) {
        self.stats.published += 1;
        let route = &self.route;
        let remote: Vec<RelayId> = self
            .interest
            .remote_matches(p.tenant, p.channel)
            .map(RelayId::from_name)
            .filter(|id| route.next_hop(*id).is_some())
            .collect();
        let metric_to = |id: RelayId| route.route(id).map_or(u32::MAX, |r| r.metric.as_us());
        let dests = match forward::choose(p.mode, remote, p.local_match, metric_to, &mut self.rng) {
            Choice::Nowhere => return,
            Choice::Here => {
                // This relay won the draw.
                self.stats.delivered_local += 1;
                self.out.event(MeshEvent::Deliver {
                    tenant: p.tenant.to_owned(),
                    channel: p.channel.to_owned(),
                    payload: Bytes::copy_from_slice(p.payload),
                    mode: p.mode,
                });
                return;
            }
            Choice::Relays(d) => d,
        };
        self.next_msg += 1;
        let msg_id = (u64::from(self.epoch) << 32) | (self.next_msg & 0xffff_ffff);
        let name = self.cfg.name.clone();
        let data = Data {
            origin: &name,
            msg_id,
            hop_limit: self.cfg.hop_limit,
            mode: p.mode,
            destinations: heapless::Vec::new(),
            tenant: p.tenant,
            channel: p.channel,
            payload: p.payload,
        };
        self.forward(&data, &dests);
    }

    /// A data message from a link: deliver here if this relay is a destination (once),
    /// forward the rest while the hop limit lasts.
    pub(super) fn on_data(&mut self, bytes: &Bytes, _now: u64) {
        let data = match mesh::decode(bytes) {
            Ok(Message::Data(d)) => d,
            Ok(_) | Err(_) => {
                self.stats.bad_messages += 1;
                return;
            }
        };
        self.stats.data_received += 1;
        if data.destinations.contains(&self.me) {
            if self.dedup.first_time(data.origin, data.msg_id) {
                self.stats.delivered_local += 1;
                self.out.event(MeshEvent::Deliver {
                    tenant: data.tenant.to_owned(),
                    channel: data.channel.to_owned(),
                    payload: bytes.slice_ref(data.payload),
                    mode: data.mode,
                });
            } else {
                self.stats.duplicates += 1;
            }
        }
        let rest: Vec<RelayId> = data
            .destinations
            .iter()
            .copied()
            .filter(|d| *d != self.me)
            .collect();
        if rest.is_empty() {
            return;
        }
        if data.hop_limit == 0 {
            self.stats.dropped_hop_limit += rest.len() as u64;
            return;
        }
        let next = Data {
            hop_limit: data.hop_limit - 1,
            ..data.clone()
        };
        self.forward(&next, &rest);
    }

    /// Send `data` towards `dests`, one copy per next hop.
    fn forward(&mut self, data: &Data<'_>, dests: &[RelayId]) {
        let route = &self.route;
        let plan = forward::plan(self.me, dests, |d| route.next_hop(d));
        self.stats.dropped_no_route += plan.no_route;
        for g in plan.groups {
            let Some(link) = self.link_of(g.next_hop) else {
                self.stats.dropped_no_route += g.destinations.len() as u64;
                continue;
            };
            let copy = Data {
                destinations: g.destinations,
                ..data.clone()
            };
            let Some(bytes) = self.encode(&Message::Data(copy)) else {
                continue;
            };
            self.data_copies += 1;
            self.transmit(link, TransmitKind::Message, bytes);
        }
    }
}
