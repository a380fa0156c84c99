//! The intake pause (design principle 2, "loss only where someone is slow"): while the relay
//! is behind on its own writing — some connection's queue is at
//! [`Limits::behind_bytes`](crate::limits::Limits::behind_bytes) although its socket takes
//! bytes — every connection's reads wait ([`ReadStop::RelayBehind`](super::ReadStop)), so TCP
//! pushes back on publishers instead of the relay dropping deliveries for listeners that
//! read.
//!
//! This file keeps the bookkeeping only: how many backlogs hold the pause, since when, how
//! long pauses lasted, and who waits in which order. The [`Broker`](super::Broker) decides
//! which backlog holds (per connection) and wakes the waiters this hands back. Time comes in
//! as `now`.

use std::collections::VecDeque;
use std::time::Instant;

use super::ConnId;
use crate::limits::MAX_INTAKE_PAUSE;

/// State of the intake pause.
#[derive(Debug, Default)]
pub struct Intake {
    /// Backlogs holding the pause.
    holders: usize,
    /// Since when intake is paused (`holders > 0`).
    since: Option<Instant>,
    /// Connections waiting for the pause to end, in release order.
    waiters: VecDeque<ConnId>,
    /// Pauses started.
    pauses: u64,
    /// Total paused time, µs.
    paused_us: u64,
    /// Pauses ended by [`MAX_INTAKE_PAUSE`].
    overruns: u64,
}

impl Intake {
    /// Is intake paused?
    pub fn paused(&self) -> bool {
        self.holders > 0
    }

    /// One more backlog holds the pause (the first one starts it).
    pub fn hold(&mut self, now: Instant) {
        self.holders += 1;
        if self.holders == 1 {
            self.since = Some(now);
            self.pauses += 1;
        }
    }

    /// One backlog less holds the pause. `true` when that ended it: the caller then releases
    /// the waiters ([`Intake::end`]).
    #[must_use]
    pub fn unhold(&mut self) -> bool {
        let was = self.holders;
        self.holders = self.holders.saturating_sub(1);
        was > 0 && self.holders == 0
    }

    /// Has the pause lasted [`MAX_INTAKE_PAUSE`] at `now`?
    pub fn overdue(&self, now: Instant) -> bool {
        self.since
            .is_some_and(|s| now.saturating_duration_since(s) >= MAX_INTAKE_PAUSE)
    }

    /// Forgets every holder (the caller has stopped counting their backlogs) and counts an
    /// overrun; end the pause with [`Intake::end`].
    pub fn overrun(&mut self) {
        self.holders = 0;
        self.overruns += 1;
    }

    /// Connection `id` waits for the pause to end. `served`: it was allowed to read since it
    /// was last released, so it waits behind those that were not (released in this order,
    /// the executor runs them in this order: one fast reader cannot starve another).
    pub fn wait(&mut self, id: ConnId, served: bool) {
        if served {
            self.waiters.push_back(id);
        } else {
            self.waiters.push_front(id);
        }
    }

    /// Ends the pause at `now`: counts its time and hands out the waiters in release order
    /// (appended to `out`).
    pub fn end(&mut self, now: Instant, out: &mut Vec<ConnId>) {
        if let Some(since) = self.since.take() {
            let us = u64::try_from(now.saturating_duration_since(since).as_micros());
            self.paused_us = self.paused_us.saturating_add(us.unwrap_or(u64::MAX));
        }
        out.extend(self.waiters.drain(..));
    }

    /// (pauses started, total paused µs, pauses ended by the bound).
    pub fn counters(&self) -> (u64, u64, u64) {
        (self.pauses, self.paused_us, self.overruns)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_pause_lasts_while_any_backlog_holds_it_and_is_timed() {
        let t0 = crate::clock::now();
        let mut i = Intake::default();
        assert!(!i.paused());
        i.hold(t0);
        i.hold(t0 + Duration::from_millis(1));
        assert!(i.paused());
        assert!(!i.unhold(), "one backlog still holds it");
        assert!(i.unhold(), "the last one ends it");
        let mut out = Vec::new();
        i.end(t0 + Duration::from_millis(3), &mut out);
        assert!(!i.paused());
        assert_eq!(i.counters(), (1, 3000, 0));
        assert!(!i.unhold(), "no pause to end");
    }

    #[test]
    fn waiters_that_did_not_read_last_time_go_first() {
        let t0 = crate::clock::now();
        let mut i = Intake::default();
        i.hold(t0);
        i.wait(1, true); // read, then caused the pause
        i.wait(2, false); // did not get to read
        i.wait(3, true);
        i.wait(4, false);
        let mut out = Vec::new();
        i.end(t0, &mut out);
        assert_eq!(out, [4, 2, 1, 3]);
        out.clear();
        i.end(t0, &mut out);
        assert!(out.is_empty(), "handed out once");
    }

    #[test]
    fn a_pause_is_bounded() {
        let t0 = crate::clock::now();
        let mut i = Intake::default();
        i.hold(t0);
        i.hold(t0);
        assert!(!i.overdue(t0 + MAX_INTAKE_PAUSE - Duration::from_millis(1)));
        assert!(i.overdue(t0 + MAX_INTAKE_PAUSE));
        i.overrun();
        assert!(!i.paused());
        let mut out = Vec::new();
        i.end(t0 + MAX_INTAKE_PAUSE, &mut out);
        assert_eq!(i.counters(), (1, 1_000_000, 1));
        assert!(!i.overdue(t0 + MAX_INTAKE_PAUSE * 10));
    }
}
