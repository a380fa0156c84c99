//! Link measurement: probes on one link and what their answers say (sans-IO, time in µs).
//!
//! Every `interval` the link sends a [`Probe`] (a QUIC datagram, so it can be lost); the
//! peer echoes it in a [`ProbeAck`]. From the answers:
//! - smoothed RTT (EWMA, gain 1/8, as TCP's SRTT) and minimum RTT over the window;
//! - jitter: mean deviation of the RTT samples from the smoothed RTT (EWMA, gain 1/4);
//! - loss: the share of the last [`WINDOW`] probes that were not answered within
//!   `1 s + srtt` (a probe still within that time is not counted either way). Probes sent
//!   before the first one the peer answered are not counted as lost: the link was still
//!   opening (the peer's side may not exist yet), and one such probe in a window of ten
//!   would otherwise show as a 10 % loss spike on every new link;
//! - down: no answer at all for `down_after + srtt` (default 1 s + RTT) while probes kept
//!   going out. The first answer after that brings the link back up.
//!
//! # Call order
//!
//! The shape of every mesh sub-machine (and of `core::route::RouteTable`):
//! 1. inputs: [`LinkProbe::handle_ack`] for each answer, [`LinkProbe::handle_unsent`] for a
//!    probe the link refused, [`LinkProbe::handle_timeout`] when
//!    [`LinkProbe::poll_timeout`] has come;
//! 2. then drain [`LinkProbe::poll_transmit`] (the probe due, if any: send it) and
//!    [`LinkProbe::poll_event`] (a change of the link's state);
//! 3. re-arm at [`LinkProbe::poll_timeout`] (the next probe, or the moment silence would
//!    make the link down).
//!
//! Every call is `O(1)` but [`LinkProbe::measurement`] (`O(WINDOW)`).

use fastpubsub_core::mesh::{Probe, ProbeAck};
use fastpubsub_core::route::LinkMeasurement;

pub use super::limits::PROBE_WINDOW as WINDOW;

/// Probe timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Time between probes, µs.
    pub interval_us: u64,
    /// Silence (plus the smoothed RTT) after which the link is declared down, µs.
    pub down_after_us: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval_us: 250_000,
            down_after_us: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    seq: u32,
    sent_us: u64,
    rtt_us: Option<u32>,
    used: bool,
}

/// A state change of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// Answers arrive.
    Up,
    /// Silent for longer than the down threshold.
    Down,
}

/// Measurements of one link. See the module docs.
#[derive(Debug, Clone)]
pub struct LinkProbe {
    cfg: ProbeConfig,
    next_seq: u32,
    next_probe_us: u64,
    ring: [Slot; WINDOW],
    srtt_us: Option<u32>,
    jitter_us: u32,
    last_answer_us: Option<u64>,
    started_us: u64,
    /// When the first probe that got an answer was sent (loss counts from there).
    first_answered_sent_us: Option<u64>,
    state: Option<LinkState>,
    /// A state change not handed out by [`Self::poll_event`] yet.
    event: Option<LinkState>,
    /// Probes sent (total).
    pub sent: u64,
    /// Answers received (total).
    pub answered: u64,
    /// Answers that matched no outstanding probe (too late or forged).
    pub stray: u64,
}

impl LinkProbe {
    /// A link that starts probing at `now_us`.
    pub fn new(cfg: ProbeConfig, now_us: u64) -> Self {
        Self {
            cfg,
            next_seq: 0,
            next_probe_us: now_us,
            ring: [Slot::default(); WINDOW],
            srtt_us: None,
            jitter_us: 0,
            last_answer_us: None,
            started_us: now_us,
            first_answered_sent_us: None,
            state: None,
            event: None,
            sent: 0,
            answered: 0,
            stray: 0,
        }
    }

    /// When to call again: the next probe, or the moment the silence so far would make
    /// the link down (whichever is first).
    pub fn poll_timeout(&self) -> Option<u64> {
        let down_at = match self.state {
            Some(LinkState::Down) => u64::MAX,
            _ => self
                .last_answer_us
                .unwrap_or(self.started_us)
                .saturating_add(self.down_threshold())
                .saturating_add(1),
        };
        Some(self.next_probe_us.min(down_at))
    }

    /// The probe to send now, if one is due.
    pub fn poll_transmit(&mut self, now_us: u64) -> Option<Probe> {
        if now_us < self.next_probe_us {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        // Catch up without bursts after a stall.
        self.next_probe_us = (self.next_probe_us + self.cfg.interval_us).max(now_us + 1);
        if let Some(slot) = self.ring.get_mut(seq as usize % WINDOW) {
            *slot = Slot {
                seq,
                sent_us: now_us,
                rtt_us: None,
                used: true,
            };
        }
        self.sent += 1;
        Some(Probe {
            seq,
            sent_us: now_us,
        })
    }

    /// The probe `p` from [`LinkProbe::poll_transmit`] could not be sent (e.g. the local
    /// datagram queue was full): forget it, so it does not count as lost on the link.
    pub fn handle_unsent(&mut self, p: Probe) {
        if let Some(slot) = self.ring.get_mut(p.seq as usize % WINDOW)
            && slot.used
            && slot.seq == p.seq
            && slot.sent_us == p.sent_us
            && slot.rtt_us.is_none()
        {
            slot.used = false;
            self.sent = self.sent.saturating_sub(1);
        }
    }

    /// An answer arrived; returns the RTT sample (µs) if it matched an outstanding probe.
    pub fn handle_ack(&mut self, ack: ProbeAck, now_us: u64) -> Option<u32> {
        let rtt = self.take_ack(ack, now_us);
        if rtt.is_some() {
            self.check(now_us);
        }
        rtt
    }

    fn take_ack(&mut self, ack: ProbeAck, now_us: u64) -> Option<u32> {
        let slot = self.ring.get_mut(ack.seq as usize % WINDOW)?;
        if !slot.used || slot.seq != ack.seq || slot.sent_us != ack.echo_us || slot.rtt_us.is_some()
        {
            self.stray += 1;
            return None;
        }
        let rtt = u32::try_from(now_us.saturating_sub(slot.sent_us))
            .unwrap_or(u32::MAX)
            .max(1);
        slot.rtt_us = Some(rtt);
        let sent_us = slot.sent_us;
        if self.first_answered_sent_us.is_none_or(|f| sent_us < f) {
            self.first_answered_sent_us = Some(sent_us);
        }
        self.answered += 1;
        self.last_answer_us = Some(now_us);
        match self.srtt_us {
            None => {
                self.srtt_us = Some(rtt);
                self.jitter_us = rtt / 2;
            }
            Some(s) => {
                let dev = rtt.abs_diff(s);
                self.jitter_us = ((3 * u64::from(self.jitter_us) + u64::from(dev)) / 4) as u32;
                self.srtt_us = Some(((7 * u64::from(s) + u64::from(rtt)) / 8) as u32);
            }
        }
        Some(rtt)
    }

    fn down_threshold(&self) -> u64 {
        self.cfg.down_after_us + u64::from(self.srtt_us.unwrap_or(0))
    }

    /// Time passed: the link may have gone silent for too long.
    pub fn handle_timeout(&mut self, now_us: u64) {
        self.check(now_us);
    }

    /// A change of the link's state since the last call (the latest one wins).
    pub fn poll_event(&mut self) -> Option<LinkState> {
        self.event.take()
    }

    fn check(&mut self, now_us: u64) {
        let since = self.last_answer_us.unwrap_or(self.started_us);
        let silent = now_us.saturating_sub(since);
        let new = if self.last_answer_us.is_some() && silent <= self.down_threshold() {
            LinkState::Up
        } else if silent > self.down_threshold() {
            LinkState::Down
        } else {
            return; // not answered yet, still within the first threshold
        };
        if self.state == Some(new) {
            return;
        }
        // "Down" is only news if the link was up (or never came up within the threshold).
        self.state = Some(new);
        self.event = Some(new);
    }

    /// The current state (`None` until the first answer or the first threshold).
    pub fn state(&self) -> Option<LinkState> {
        self.state
    }

    /// Whether the link answered recently enough to be used.
    pub fn is_up(&self) -> bool {
        self.state == Some(LinkState::Up)
    }

    /// When the last answer arrived, µs.
    pub fn last_answer_us(&self) -> Option<u64> {
        self.last_answer_us
    }

    /// Smoothed RTT, µs.
    pub fn srtt_us(&self) -> Option<u32> {
        self.srtt_us
    }

    /// What the routing table needs, as of `now_us`.
    pub fn measurement(&self, now_us: u64) -> LinkMeasurement {
        let timeout = self.cfg.down_after_us + u64::from(self.srtt_us.unwrap_or(0));
        let mut lost = 0u32;
        let mut decided = 0u32;
        let mut min_rtt = u32::MAX;
        for s in self.ring.iter().filter(|s| s.used) {
            match s.rtt_us {
                Some(r) => {
                    decided += 1;
                    min_rtt = min_rtt.min(r);
                }
                // Sent while the link was still opening: not a loss.
                None if self.first_answered_sent_us.is_some_and(|f| s.sent_us < f) => {}
                None if now_us.saturating_sub(s.sent_us) > timeout => {
                    decided += 1;
                    lost += 1;
                }
                None => {}
            }
        }
        let srtt = self.srtt_us.unwrap_or(0);
        LinkMeasurement {
            rtt_us: srtt,
            min_rtt_us: if min_rtt == u32::MAX { srtt } else { min_rtt },
            jitter_us: self.jitter_us,
            loss_ppm: if decided == 0 {
                0
            } else {
                (u64::from(lost) * 1_000_000 / u64::from(decided)) as u32
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(p: Probe) -> ProbeAck {
        ProbeAck {
            seq: p.seq,
            echo_us: p.sent_us,
        }
    }

    /// Drive a link in virtual time: every probe answered after `rtt(i)` unless `lost(i)`.
    fn drive(
        probe: &mut LinkProbe,
        from_us: u64,
        to_us: u64,
        rtt: impl Fn(u32) -> u64,
        lost: impl Fn(u32) -> bool,
    ) -> Vec<(u64, LinkState)> {
        let mut inflight: Vec<(u64, ProbeAck)> = Vec::new();
        let mut changes = Vec::new();
        let mut t = from_us;
        while t <= to_us {
            if let Some(p) = probe.poll_transmit(t)
                && !lost(p.seq)
            {
                inflight.push((t + rtt(p.seq), ack(p)));
            }
            inflight.retain(|(due, a)| {
                if *due <= t {
                    probe.handle_ack(*a, t);
                    false
                } else {
                    true
                }
            });
            probe.handle_timeout(t);
            if let Some(s) = probe.poll_event() {
                changes.push((t, s));
            }
            t += 1_000;
        }
        changes
    }

    #[test]
    fn rtt_min_jitter_loss() {
        let mut p = LinkProbe::new(ProbeConfig::default(), 0);
        // RTT alternating 40/44 ms, every 10th probe lost.
        let ch = drive(
            &mut p,
            0,
            12_000_000,
            |i| if i % 2 == 0 { 40_000 } else { 44_000 },
            |i| i % 10 == 9,
        );
        assert_eq!(ch.first().map(|c| c.1), Some(LinkState::Up));
        assert_eq!(ch.len(), 1, "{ch:?}");
        let m = p.measurement(12_000_000);
        assert!((40_000..=44_000).contains(&m.rtt_us), "{m:?}");
        assert_eq!(m.min_rtt_us, 40_000);
        assert!((1_000..=3_000).contains(&m.jitter_us), "{m:?}");
        // 4 of the 40 in the window lost (±1 for probes still in flight).
        assert!((75_000..=130_000).contains(&m.loss_ppm), "{m:?}");
    }

    #[test]
    fn down_within_a_second_plus_rtt_then_up_again() {
        let mut p = LinkProbe::new(ProbeConfig::default(), 0);
        let ch = drive(&mut p, 0, 3_000_000, |_| 100_000, |_| false);
        assert_eq!(ch, vec![(100_000, LinkState::Up)]);
        // Silence from 3 s on (answers still in flight are lost too).
        let last_answer = p.last_answer_us().expect("answered");
        let ch = drive(&mut p, 3_000_001, 6_000_000, |_| 100_000, |_| true);
        let (t, s) = ch.first().copied().expect("down");
        assert_eq!(s, LinkState::Down);
        let silence = t - last_answer;
        assert!(
            silence > 1_000_000 && silence <= 1_000_000 + 100_000 + 2_000,
            "{silence}"
        );
        // Answers again.
        let ch = drive(&mut p, 6_000_001, 7_000_000, |_| 100_000, |_| false);
        assert_eq!(ch.first().map(|c| c.1), Some(LinkState::Up));
        assert!(p.measurement(7_000_000).loss_ppm > 0);
    }

    #[test]
    fn forged_or_duplicate_acks_are_stray() {
        let mut p = LinkProbe::new(ProbeConfig::default(), 0);
        let probe = p.poll_transmit(0).expect("due");
        assert!(
            p.handle_ack(
                ProbeAck {
                    seq: probe.seq,
                    echo_us: 999
                },
                10
            )
            .is_none()
        );
        assert!(
            p.handle_ack(
                ProbeAck {
                    seq: 12345,
                    echo_us: 0
                },
                10
            )
            .is_none()
        );
        assert_eq!(p.handle_ack(ack(probe), 20_000), Some(20_000));
        assert!(p.handle_ack(ack(probe), 30_000).is_none());
        assert_eq!(p.stray, 3);
    }

    #[test]
    fn unsent_probe_is_not_lost() {
        let mut p = LinkProbe::new(ProbeConfig::default(), 0);
        let first = p.poll_transmit(0).expect("due");
        p.handle_unsent(first);
        assert_eq!(p.sent, 0);
        let ch = drive(&mut p, 1, 3_000_000, |_| 40_000, |_| false);
        assert_eq!(ch.first().map(|c| c.1), Some(LinkState::Up));
        assert_eq!(p.measurement(3_000_000).loss_ppm, 0);
        // Probes at 0.25 s … 2.75 s, all answered.
        assert_eq!((p.sent, p.answered), (11, 11));
        // A late answer to the forgotten probe is stray, not an RTT sample.
        assert!(p.handle_ack(ack(first), 3_000_000).is_none());
    }

    #[test]
    fn probes_before_the_first_answer_are_not_lost() {
        let mut p = LinkProbe::new(ProbeConfig::default(), 0);
        // The peer's side is not ready for the first two probes (0 s, 0.25 s).
        let ch = drive(&mut p, 0, 3_000_000, |_| 40_000, |seq| seq < 2);
        assert_eq!(ch.first().map(|c| c.1), Some(LinkState::Up));
        assert_eq!(p.measurement(3_000_000).loss_ppm, 0);
        assert!(
            p.sent >= p.answered + 2,
            "{} sent, {} answered",
            p.sent,
            p.answered
        );
        // A probe lost once the link answers does count.
        let mut p = LinkProbe::new(ProbeConfig::default(), 0);
        drive(&mut p, 0, 3_000_000, |_| 40_000, |seq| seq == 4);
        assert!(p.measurement(3_000_000).loss_ppm > 0);
    }

    #[test]
    fn never_answered_goes_down() {
        let mut p = LinkProbe::new(ProbeConfig::default(), 0);
        let ch = drive(&mut p, 0, 2_000_000, |_| 0, |_| true);
        assert_eq!(ch.first().map(|c| c.1), Some(LinkState::Down));
    }
}
