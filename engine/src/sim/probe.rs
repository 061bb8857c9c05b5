//! A tiny endpoint for the simulator's own tests: it sends on command or on a timer,
//! optionally echoes, and records everything it sees.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::runtime::Endpoint;

/// What a [`Probe`] is told to do.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cmd {
    /// Send `count` datagrams of `size` bytes (at least 5) to `to` right away.
    Burst {
        to: SocketAddr,
        count: u32,
        size: usize,
    },
    /// Starting `every` from now, send one datagram to each of `to`, `count` times.
    Tick {
        to: Vec<SocketAddr>,
        every: Duration,
        count: u32,
    },
    /// Send one datagram to `to` that is echoed back and forth `hops` times.
    Ping { to: SocketAddr, hops: u8 },
}

/// One datagram a probe received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Got {
    pub(super) at: Instant,
    pub(super) from: SocketAddr,
    pub(super) seq: u32,
    pub(super) len: usize,
}

/// Payload: `[hops left][seq u32 LE][filler…]`. A probe echoes a datagram with hops left,
/// one hop fewer.
pub(super) struct Probe {
    pub(super) addr: SocketAddr,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    seq: u32,
    tick: Option<(Vec<SocketAddr>, Duration, u32)>,
    deadline: Option<Instant>,
    pub(super) got: Vec<Got>,
    /// `(now, deadline)` of every `handle_timeout`.
    pub(super) timeouts: Vec<(Instant, Instant)>,
}

impl Probe {
    pub(super) fn new(addr: SocketAddr) -> Self {
        Probe {
            addr,
            out: VecDeque::new(),
            seq: 0,
            tick: None,
            deadline: None,
            got: Vec::new(),
            timeouts: Vec::new(),
        }
    }

    /// A probe that sends `count` datagrams of `size` bytes to each of `to` as soon as it
    /// is built.
    pub(super) fn sending(addr: SocketAddr, to: &[SocketAddr], count: u32, size: usize) -> Self {
        let mut probe = Probe::new(addr);
        for &dest in to {
            probe.queue(dest, count, size, 0);
        }
        probe
    }

    fn queue(&mut self, to: SocketAddr, count: u32, size: usize, hops: u8) {
        for _ in 0..count {
            let mut data = vec![0xAB; size.max(5)];
            data[0] = hops;
            data[1..5].copy_from_slice(&self.seq.to_le_bytes());
            self.seq += 1;
            self.out.push_back((to, data));
        }
    }

    /// The sequence numbers received from `from`, in arrival order.
    pub(super) fn seqs_from(&self, from: SocketAddr) -> Vec<u32> {
        self.got
            .iter()
            .filter(|g| g.from == from)
            .map(|g| g.seq)
            .collect()
    }
}

impl Endpoint for Probe {
    type Command = Cmd;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        let seq = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
        self.got.push(Got {
            at: now,
            from,
            seq,
            len: data.len(),
        });
        if data[0] > 0 {
            let mut reply = data.to_vec();
            reply[0] -= 1;
            self.out.push_back((from, reply));
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let deadline = self.deadline.expect("handle_timeout without a deadline");
        assert!(now >= deadline, "timeout at {now:?} before {deadline:?}");
        self.timeouts.push((now, deadline));
        self.deadline = None;
        if let Some((to, every, left)) = self.tick.take() {
            for &dest in &to {
                self.queue(dest, 1, 8, 0);
            }
            if left > 1 {
                self.deadline = Some(now + every);
                self.tick = Some((to, every, left - 1));
            }
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: Cmd) {
        match cmd {
            Cmd::Burst { to, count, size } => self.queue(to, count, size, 0),
            Cmd::Tick { to, every, count } => {
                if count > 0 {
                    self.deadline = Some(now + every);
                    self.tick = Some((to, every, count));
                }
            }
            Cmd::Ping { to, hops } => self.queue(to, 1, 8, hops),
        }
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let (to, data) = self.out.pop_front()?;
        buf.extend_from_slice(&data);
        Some(to)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
}
