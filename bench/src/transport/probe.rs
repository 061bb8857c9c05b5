//! What a receiver shares with the thread that runs the measurement: the current run, the
//! arrivals counted so far and when the last one came, and a way to wake the waiting thread.
//!
//! Every value a receiver writes per datagram sits on its own cache line, apart from the
//! read-mostly run and target, so the waiting thread's occasional reads do not slow the
//! receiver down.

use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Run ids live in the top 24 bits of a packed counter.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const RUN_MASK: u32 = (1 << (64 - COUNT_BITS)) - 1;

/// How often a waiting thread checks progress when nobody wakes it.
const POLL: Duration = Duration::from_millis(5);
/// A run whose arrivals stop growing for this long is over: what is missing was dropped.
pub const GIVE_UP: Duration = Duration::from_millis(500);
/// No run lasts longer than this, however slowly datagrams trickle in.
const MAX_RUN: Duration = Duration::from_secs(120);

/// A value alone on its cache line (two, for CPUs that prefetch pairs of lines).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[inline]
fn pack(run: u32, n: u64) -> u64 {
    (u64::from(run) << COUNT_BITS) | (n & COUNT_MASK)
}

#[inline]
fn unpack(run: u32, packed: u64) -> u64 {
    if (packed >> COUNT_BITS) as u32 == run {
        packed & COUNT_MASK
    } else {
        0
    }
}

/// A thread to wake when a run completes.
#[derive(Debug, Default)]
pub(crate) struct Waiter(Mutex<Option<Thread>>);

impl Waiter {
    /// The calling thread will be woken.
    pub(crate) fn register(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread::current());
    }

    pub(crate) fn wake(&self) {
        if let Some(t) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            t.unpark();
        }
    }
}

/// Shared between one receiver and the measuring thread; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    run: AtomicU32,
    target: AtomicU64,
    waiter: Waiter,
    /// `(run, datagrams counted)`, packed.
    progress: Padded<AtomicU64>,
    /// Nanoseconds since [`super::epoch`] of the last counted arrival.
    last_ns: Padded<AtomicU64>,
    /// `(run, datagrams sent)`, packed; written by the sender.
    sent: Padded<AtomicU64>,
    /// Window write-offs, cumulative; written by the sender.
    write_offs: Padded<AtomicU64>,
}

impl Probe {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Starts a new run of `count` datagrams, woken on the calling thread; returns its id.
    pub(crate) fn begin(&self, count: u64) -> u32 {
        self.waiter.register();
        let run = (self.run.load(Ordering::Relaxed) & RUN_MASK) % RUN_MASK + 1;
        self.target.store(count, Ordering::Relaxed);
        // Release: a receiver that sees the new run sees its target.
        self.run.store(run, Ordering::Release);
        run
    }

    /// The target of `run` if it is the current run.
    #[inline]
    pub(crate) fn target_of(&self, run: u32) -> Option<u64> {
        (self.run.load(Ordering::Acquire) == run).then(|| self.target.load(Ordering::Relaxed))
    }

    /// The receiver counted `count` datagrams of `run`, the last at `now_ns`.
    #[inline]
    pub(crate) fn record(&self, run: u32, count: u64, target: u64, now_ns: u64) {
        self.last_ns.store(now_ns, Ordering::Relaxed);
        self.progress.store(pack(run, count), Ordering::Release);
        if count == target {
            self.waiter.wake();
        }
    }

    /// Datagrams of `run` counted so far.
    pub(crate) fn received(&self, run: u32) -> u64 {
        unpack(run, self.progress.load(Ordering::Acquire))
    }

    /// When the last counted datagram arrived, in nanoseconds since [`super::epoch`].
    pub(crate) fn last_ns(&self) -> u64 {
        self.last_ns.load(Ordering::Relaxed)
    }

    /// The sender has sent `n` datagrams of `run`.
    #[inline]
    pub(crate) fn set_sent(&self, run: u32, n: u64) {
        self.sent.store(pack(run, n), Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, run: u32) -> u64 {
        unpack(run, self.sent.load(Ordering::Relaxed))
    }

    /// The sender wrote its window off once more.
    pub(crate) fn add_write_off(&self) {
        self.write_offs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn write_offs(&self) -> u64 {
        self.write_offs.load(Ordering::Relaxed)
    }

    /// Blocks until `run` has counted its target, or has made no progress for
    /// [`GIVE_UP`]; returns the datagrams counted.
    pub(crate) fn wait(&self, run: u32) -> u64 {
        let target = self.target.load(Ordering::Relaxed);
        wait_for(target, || self.received(run))
    }
}

/// Blocks the calling thread (woken by [`Waiter::wake`] or every few milliseconds) until
/// `progress()` reaches `target`, stops growing for [`GIVE_UP`], or [`MAX_RUN`] passes.
/// Returns the last progress seen.
pub(crate) fn wait_for(target: u64, mut progress: impl FnMut() -> u64) -> u64 {
    let begun = Instant::now();
    let (mut seen, mut since) = (0, begun);
    loop {
        let got = progress();
        if got >= target {
            return got;
        }
        let now = Instant::now();
        if got != seen {
            (seen, since) = (got, now);
        } else if now - since >= GIVE_UP || now - begun >= MAX_RUN {
            return got;
        }
        thread::park_timeout(POLL);
    }
}

/// What a many-sockets relay shares with its harness: the current run, the tokens each
/// receiving context counted (cumulative, with when the last came), and the tokens that made
/// their last hop, which end a run.
pub(crate) struct RelayRuns {
    run: AtomicU32,
    arrivals: Vec<Padded<(AtomicU64, AtomicU64)>>,
    finished: Padded<AtomicU64>,
    finish_at: AtomicU64,
    waiter: Waiter,
}

impl RelayRuns {
    /// Counters for `receivers` receiving contexts (endpoints or threads).
    pub(crate) fn new(receivers: usize) -> Self {
        Self {
            run: AtomicU32::new(0),
            arrivals: (0..receivers).map(|_| Padded::default()).collect(),
            finished: Padded::default(),
            finish_at: AtomicU64::new(u64::MAX),
            waiter: Waiter::default(),
        }
    }

    /// Counts a token of `run` received by context `slot` at `at` (in `nanos`); false, and
    /// nothing counted, for a token of an abandoned run. Each slot has one writer, so this
    /// is a plain load and store, no locked instruction.
    pub(crate) fn arrive(&self, slot: usize, run: u32, at: u64) -> bool {
        if run != self.run.load(Ordering::Acquire) {
            return false;
        }
        let (received, last) = &*self.arrivals[slot];
        received.store(received.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        last.store(at, Ordering::Relaxed);
        true
    }

    /// A token made its last hop; the last one of a run wakes the harness.
    pub(crate) fn finish(&self) {
        let done = self.finished.fetch_add(1, Ordering::AcqRel) + 1;
        if done == self.finish_at.load(Ordering::Relaxed) {
            self.waiter.wake();
        }
    }

    /// Tokens received in counted runs, over all contexts.
    pub(crate) fn received(&self) -> u64 {
        self.arrivals
            .iter()
            .map(|a| a.0 .0.load(Ordering::Relaxed))
            .sum()
    }

    /// Starts a run of `tokens` tokens on the calling (harness) thread; returns its id.
    pub(crate) fn begin(&self, tokens: usize) -> u32 {
        let finished_before = self.finished.load(Ordering::Acquire);
        self.waiter.register();
        self.finish_at
            .store(finished_before + tokens as u64, Ordering::Relaxed);
        let run = self.run.load(Ordering::Relaxed).wrapping_add(1).max(1);
        self.run.store(run, Ordering::Release);
        run
    }

    /// Waits until `count` tokens have been received since `received_before` (or the run
    /// stalls), and returns the receptions and the last arrival (in `nanos`).
    pub(crate) fn wait(&self, count: u64, received_before: u64) -> (u64, u64) {
        let received = wait_for(count, || self.received() - received_before);
        let last = self
            .arrivals
            .iter()
            .map(|a| a.0 .1.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        (received, last)
    }
}

/// `hops` dealt round robin into `n` injections.
pub(crate) fn deal(hops: &[u64], n: usize) -> Vec<Vec<u64>> {
    let mut parts: Vec<Vec<u64>> = vec![Vec::new(); n];
    for (i, h) in hops.iter().enumerate() {
        parts[i % n].push(*h);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn packing_separates_runs() {
        assert_eq!(unpack(3, pack(3, 12345)), 12345);
        assert_eq!(unpack(4, pack(3, 12345)), 0);
        assert_eq!(unpack(RUN_MASK, pack(RUN_MASK, COUNT_MASK)), COUNT_MASK);
    }

    #[test]
    fn run_ids_advance_and_wrap_past_zero() {
        let p = Probe::new();
        let a = p.begin(10);
        let b = p.begin(10);
        assert_ne!(a, b);
        assert!(a > 0 && b > 0);
        assert_eq!(p.target_of(a), None);
        assert_eq!(p.target_of(b), Some(10));
        p.run.store(RUN_MASK, Ordering::Relaxed);
        assert_eq!(p.begin(1), 1, "wraps to 1, never 0");
    }

    #[test]
    fn wait_returns_on_target_or_stall() {
        let p = Arc::new(Probe::new());
        let run = p.begin(3);
        let q = Arc::clone(&p);
        let t = std::thread::spawn(move || {
            for i in 1..=3 {
                q.record(run, i, 3, i);
            }
        });
        assert_eq!(p.wait(run), 3);
        t.join().unwrap();
        assert_eq!(p.last_ns(), 3);
        // Nothing arrives: gives up after GIVE_UP with what it has.
        let run = p.begin(5);
        let begun = Instant::now();
        assert_eq!(p.wait(run), 0);
        assert!(begun.elapsed() >= GIVE_UP);
    }
}
