//! The benchmark's own datagram header, shared by every transport under test, and the two
//! pieces of flow-control state built on it (the sender's window, the receiver's counter).
//!
//! | bytes | field |
//! |---|---|
//! | 1 | kind: [`DATA`], [`ACK`], [`PING`], [`PONG`] or [`TOKEN`] |
//! | 4 | run id, little-endian: datagrams of an earlier (abandoned) run are ignored |
//! | 8 | value, little-endian: sequence number, cumulative count, timestamp or hops left |
//!
//! The rest of a datagram is seeded random filler up to the payload size.

use super::probe::Probe;
use super::{ACK_EVERY, WINDOW};

/// Bytes of the header; the smallest payload.
pub(crate) const HEADER_LEN: usize = 13;
/// One-flow data; value = sequence number within the run.
pub(crate) const DATA: u8 = 1;
/// One-flow acknowledgement; value = datagrams of the run received so far.
pub(crate) const ACK: u8 = 2;
/// Latency probe; value = send time in nanoseconds since [`super::epoch`].
pub(crate) const PING: u8 = 3;
/// A ping sent back unchanged but for the kind.
pub(crate) const PONG: u8 = 4;
/// Many-sockets relay token; value = receptions left, this one included.
pub(crate) const TOKEN: u8 = 5;

/// Writes the header over the first [`HEADER_LEN`] bytes of `buf`.
#[inline]
pub(crate) fn put(buf: &mut [u8], kind: u8, run: u32, value: u64) {
    buf[0] = kind;
    buf[1..5].copy_from_slice(&run.to_le_bytes());
    buf[5..13].copy_from_slice(&value.to_le_bytes());
}

/// Reads the header: `(kind, run, value)`, or `None` for a datagram shorter than it.
#[inline]
pub(crate) fn get(buf: &[u8]) -> Option<(u8, u32, u64)> {
    let h = buf.get(..HEADER_LEN)?;
    let run = u32::from_le_bytes(h[1..5].try_into().ok()?);
    let value = u64::from_le_bytes(h[5..13].try_into().ok()?);
    Some((h[0], run, value))
}

/// A bare acknowledgement datagram.
#[inline]
pub(crate) fn ack(run: u32, count: u64) -> [u8; HEADER_LEN] {
    let mut a = [0u8; HEADER_LEN];
    put(&mut a, ACK, run, count);
    a
}

/// The sender's side of one run: at most [`WINDOW`] datagrams sent and not yet acknowledged.
///
/// Acknowledgements are cumulative counts, read in order. When the window stays full for
/// the write-off time (acknowledgements or data lost), everything unacknowledged is written
/// off as lost and the window reopens, so a run never hangs on a drop.
#[derive(Debug, Default)]
pub(crate) struct Window {
    pub(crate) run: u32,
    /// Datagrams to send in this run.
    pub(crate) count: u64,
    /// Datagrams sent so far; the next sequence number.
    pub(crate) sent: u64,
    /// Highest cumulative acknowledgement read.
    acked: u64,
    /// Datagrams written off as lost at window stalls.
    lost: u64,
    /// Stalls that wrote datagrams off.
    pub(crate) write_offs: u64,
}

impl Window {
    pub(crate) fn start(run: u32, count: u64) -> Self {
        Self {
            run,
            count,
            ..Self::default()
        }
    }

    /// Datagrams sent, not acknowledged and not written off.
    #[inline]
    pub(crate) fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.acked + self.lost)
    }

    /// How many more may be sent now.
    #[inline]
    pub(crate) fn room(&self) -> u64 {
        WINDOW
            .saturating_sub(self.in_flight())
            .min(self.count - self.sent)
    }

    /// True while the run has datagrams left to send but the window is full.
    #[inline]
    pub(crate) fn blocked(&self) -> bool {
        self.sent < self.count && self.room() == 0
    }

    #[inline]
    pub(crate) fn done(&self) -> bool {
        self.sent == self.count
    }

    /// Takes an acknowledgement; true if it was for this run and moved the window.
    #[inline]
    pub(crate) fn on_ack(&mut self, run: u32, count: u64) -> bool {
        if run != self.run || count <= self.acked {
            return false;
        }
        self.acked = count.min(self.sent);
        true
    }

    /// The window has been full too long: write off what is in flight.
    pub(crate) fn write_off(&mut self) {
        self.lost = self.sent - self.acked.min(self.sent);
        self.write_offs += 1;
    }
}

/// The receiver's side: counts the datagrams of the current run into a [`Probe`] and says
/// when to acknowledge (every [`ACK_EVERY`] datagrams, coalesced over a receive batch, and
/// at the last one).
#[derive(Debug, Default)]
pub(crate) struct Counter {
    run: u32,
    count: u64,
    acked: u64,
}

impl Counter {
    /// A data datagram of run `run` arrived at `now_ns`: counts it if `run` is the probe's
    /// current run. Returns whether it was counted.
    #[inline]
    pub(crate) fn on_data(&mut self, probe: &Probe, run: u32, now_ns: u64) -> bool {
        let Some(target) = probe.target_of(run) else {
            return false;
        };
        if run != self.run {
            *self = Self {
                run,
                ..Self::default()
            };
        }
        self.count += 1;
        probe.record(run, self.count, target, now_ns);
        true
    }

    /// The acknowledgement to send now, if one is due: `(run, count)`.
    #[inline]
    pub(crate) fn take_ack(&mut self, probe: &Probe) -> Option<(u32, u64)> {
        let target = probe.target_of(self.run)?;
        let due = self.count / ACK_EVERY > self.acked / ACK_EVERY
            || (self.count >= target && self.acked < self.count);
        due.then(|| {
            self.acked = self.count;
            (self.run, self.count)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut buf = [0xAAu8; 64];
        put(&mut buf, PING, 7, u64::MAX - 1);
        assert_eq!(get(&buf), Some((PING, 7, u64::MAX - 1)));
        assert_eq!(buf[HEADER_LEN], 0xAA, "filler untouched");
        assert_eq!(get(&buf[..HEADER_LEN - 1]), None);
        assert_eq!(get(&ack(3, 99)), Some((ACK, 3, 99)));
    }

    #[test]
    fn window_bounds_in_flight_and_writes_off() {
        let mut w = Window::start(1, 10 * WINDOW);
        assert_eq!(w.room(), WINDOW);
        w.sent = WINDOW;
        assert!(w.blocked());
        assert!(!w.on_ack(2, 10), "other run");
        assert!(w.on_ack(1, ACK_EVERY));
        assert_eq!(w.room(), ACK_EVERY);
        assert!(!w.on_ack(1, ACK_EVERY), "stale ack");
        w.sent += ACK_EVERY;
        assert!(w.blocked());
        w.write_off();
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.write_offs, 1);
        // Late acks of written-off datagrams only widen the window, never underflow it.
        assert!(w.on_ack(1, WINDOW));
        assert_eq!(w.in_flight(), 0);
        // The room never exceeds what is left to send.
        let mut tail = Window::start(1, 5);
        assert_eq!(tail.room(), 5);
        tail.sent = 5;
        assert!(tail.done() && !tail.blocked());
    }

    #[test]
    fn counter_acks_every_batch_and_at_the_end() {
        let probe = Probe::new();
        let run = probe.begin(2 * ACK_EVERY + 3);
        let mut c = Counter::default();
        assert!(!c.on_data(&probe, run + 1, 0), "not the current run");
        let mut acks = Vec::new();
        for i in 0..2 * ACK_EVERY + 3 {
            assert!(c.on_data(&probe, run, i));
            if i % 7 == 0 || i == 2 * ACK_EVERY + 2 {
                acks.extend(c.take_ack(&probe));
            }
        }
        // Checked every 7 datagrams: the first check past each multiple of 32 acks the count
        // then (36, 64), and the last datagram is acknowledged whatever its count (67).
        assert_eq!(ACK_EVERY, 32);
        assert_eq!(acks.iter().map(|a| a.1).collect::<Vec<_>>(), [36, 64, 67]);
        assert_eq!(probe.received(run), 2 * ACK_EVERY + 3);
        assert_eq!(c.take_ack(&probe), None);
    }
}
