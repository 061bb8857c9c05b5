//! The thread-per-role baselines: a plain std `UdpSocket` loop (one blocking `send_to` or
//! `recv_from` per datagram) and a raw `sendmmsg`/`recvmmsg` loop (batches of
//! [`MMSG_BATCH`]), each with one sender thread and one receiver thread pinned to cores 0 and
//! 1 as the runtime pins its two shards.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hearsay::runtime::Stats;

use super::latency::{due_at, new_histogram, record_rtt, PingOutcome};
use super::mmsg::{v4, Batch};
use super::probe::{wait_for, Probe, Waiter};
use super::wire::{self, Counter, Window, ACK, DATA, HEADER_LEN, PING, PONG};
use super::{nanos, Harness, Outcome, Unavailable, MMSG_BATCH, RECV_BUFFER, WRITE_OFF};
use crate::sys::{pin_to_core, random_bytes, set_recv_buffer};

/// How often blocked receivers look up to see whether they should stop.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// Room for any datagram of the benchmarks.
pub(super) const BUF: usize = 2048;

/// Which system calls a thread loop uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// `UdpSocket::send_to` / `recv_from`, one datagram per call.
    Std,
    /// `sendmmsg` / `recvmmsg`, up to [`MMSG_BATCH`] datagrams per call.
    Mmsg,
}

pub(super) fn io_err(what: &str) -> impl FnOnce(io::Error) -> Unavailable + '_ {
    move |e| Unavailable(format!("{what}: {e}"))
}

/// A loopback socket with the benchmarks' receive buffer.
pub(super) fn socket() -> Result<UdpSocket, Unavailable> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(io_err("bind"))?;
    set_recv_buffer(&s, RECV_BUFFER).map_err(io_err("SO_RCVBUF"))?;
    Ok(s)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

pub(super) fn spawn(name: &str, core: usize, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            pin_to_core(core);
            f();
        })
        .expect("spawn a benchmark thread")
}

// ---------------------------------------------------------------------------------------------
// One flow

/// The one-flow measurement on two threads.
pub(crate) struct ThreadFlow {
    api: Api,
    jobs: Option<mpsc::Sender<(u32, u64)>>,
    finished: mpsc::Receiver<()>,
    probe: Arc<Probe>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl ThreadFlow {
    pub(crate) fn new(api: Api, payload: usize) -> Result<Self, Unavailable> {
        let tx = socket()?;
        let rx = socket()?;
        let to_rx = rx.local_addr().map_err(io_err("local_addr"))?;
        let to_tx = tx.local_addr().map_err(io_err("local_addr"))?;
        tx.set_read_timeout(Some(WRITE_OFF))
            .map_err(io_err("SO_RCVTIMEO"))?;
        rx.set_read_timeout(Some(STOP_CHECK))
            .map_err(io_err("SO_RCVTIMEO"))?;
        let probe = Arc::new(Probe::new());
        let stop = Arc::new(AtomicBool::new(false));
        let (jobs, job_rx) = mpsc::channel();
        let (done_tx, finished) = mpsc::channel();
        let payload = random_bytes(payload, payload as u64);
        let sender = {
            let probe = Arc::clone(&probe);
            spawn("bench-sender", 0, move || {
                send_loop(api, &tx, to_rx, &payload, &probe, &job_rx, &done_tx)
                    .expect("sender loop");
            })
        };
        let receiver = {
            let (probe, stop) = (Arc::clone(&probe), Arc::clone(&stop));
            spawn("bench-receiver", 1, move || {
                recv_loop(api, &rx, to_tx, &probe, &stop).expect("receiver loop");
            })
        };
        Ok(Self {
            api,
            jobs: Some(jobs),
            finished,
            probe,
            stop,
            threads: vec![sender, receiver],
        })
    }
}

fn send_loop(
    api: Api,
    sock: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
    probe: &Probe,
    jobs: &mpsc::Receiver<(u32, u64)>,
    done: &mpsc::Sender<()>,
) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let mut one = payload.to_vec();
    let mut batch = Batch::new(MMSG_BATCH, payload.len(), payload, v4(to)?);
    let mut ack = [0u8; BUF];
    for (run, count) in jobs {
        let mut w = Window::start(run, count);
        while !w.done() {
            // Acknowledgements are read only when the window is full: reading them is the
            // only way the window opens, so at most WINDOW / ACK_EVERY of them wait unread.
            while w.room() == 0 {
                match sock.recv(&mut ack) {
                    Ok(n) => {
                        if let Some((ACK, r, c)) = wire::get(&ack[..n]) {
                            w.on_ack(r, c);
                        }
                    }
                    Err(e) if is_timeout(&e) => {
                        w.write_off();
                        probe.add_write_off();
                    }
                    Err(e) => return Err(e),
                }
            }
            match api {
                Api::Std => {
                    wire::put(&mut one, DATA, run, w.sent);
                    // A refused send is a lost datagram (and shows in SndbufErrors).
                    let _ = sock.send_to(&one, to);
                    w.sent += 1;
                }
                Api::Mmsg => {
                    let n = w.room().min(MMSG_BATCH as u64);
                    let first = w.sent;
                    batch.send(fd, n as usize, |i, d| {
                        wire::put(d, DATA, run, first + i as u64);
                    })?;
                    w.sent += n;
                }
            }
            probe.set_sent(run, w.sent);
        }
        let _ = done.send(());
    }
    Ok(())
}

fn recv_loop(
    api: Api,
    sock: &UdpSocket,
    sender: SocketAddr,
    probe: &Probe,
    stop: &AtomicBool,
) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let mut counter = Counter::default();
    let mut buf = [0u8; BUF];
    let mut batch = Batch::new(MMSG_BATCH, BUF, &[], v4(sender)?);
    while !stop.load(Ordering::Relaxed) {
        match api {
            Api::Std => match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some((DATA, run, _)) = wire::get(&buf[..n]) {
                        counter.on_data(probe, run, nanos(Instant::now()));
                        if let Some((r, c)) = counter.take_ack(probe) {
                            let _ = sock.send_to(&wire::ack(r, c), from);
                        }
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            },
            Api::Mmsg => match batch.recv(fd) {
                Ok(n) => {
                    let now = nanos(Instant::now());
                    for i in 0..n {
                        if let Some((DATA, run, _)) = wire::get(batch.datagram(i)) {
                            counter.on_data(probe, run, now);
                        }
                    }
                    if let Some((r, c)) = counter.take_ack(probe) {
                        let _ = sock.send_to(&wire::ack(r, c), sender);
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            },
        }
    }
    Ok(())
}

/// One run of a one-flow harness: hands the sender thread its job through `start`, waits
/// for the receiver's count, then for the sender to finish its job (a stalled run still
/// sends everything).
pub(super) fn run_flow(
    probe: &Probe,
    finished: &mpsc::Receiver<()>,
    count: u64,
    start: impl FnOnce(u32),
) -> Outcome {
    let write_offs = probe.write_offs();
    let run = probe.begin(count);
    let began = Instant::now();
    start(run);
    probe.wait(run);
    finished.recv().expect("the sender thread runs");
    Outcome::new(
        began,
        probe.sent(run),
        probe.received(run),
        probe.last_ns(),
        probe.write_offs() - write_offs,
    )
}

impl Harness for ThreadFlow {
    fn run(&mut self, count: u64) -> Outcome {
        let jobs = self.jobs.as_ref().expect("jobs open until drop");
        run_flow(&self.probe, &self.finished, count, |run| {
            jobs.send((run, count)).expect("the sender thread runs");
        })
    }

    fn runtime_stats(&self) -> Option<Stats> {
        None
    }

    fn describe(&self) -> String {
        match self.api {
            Api::Std => "std UdpSocket, blocking send_to / recv_from".into(),
            Api::Mmsg => format!("libc sendmmsg / recvmmsg, batches of {MMSG_BATCH}"),
        }
    }
}

impl Drop for ThreadFlow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs = None; // ends the sender's job loop
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Latency

/// Lets `thread::sleep` wake within about a microsecond of its deadline instead of the
/// default 50 µs timer slack, so pacing is close to the schedule.
fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
    }
}

/// Paced ping-pong on threads: a pacer sends pings stamped with the send time, a receiver
/// thread on the same socket records half of each round trip, and an echo thread on the
/// other socket sends every ping back. The pinger's threads run on core 0, the echo on
/// core 1.
pub(crate) fn latency(
    api: Api,
    payload: usize,
    rate: f64,
    count: u64,
) -> Result<PingOutcome, Unavailable> {
    let pinger = socket()?;
    let echo = socket()?;
    let to_echo = echo.local_addr().map_err(io_err("local_addr"))?;
    let to_pinger = pinger.local_addr().map_err(io_err("local_addr"))?;
    echo.set_read_timeout(Some(STOP_CHECK))
        .map_err(io_err("SO_RCVTIMEO"))?;
    pinger
        .set_read_timeout(Some(STOP_CHECK))
        .map_err(io_err("SO_RCVTIMEO"))?;
    let pinger_rx = pinger.try_clone().map_err(io_err("try_clone"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let waiter = Arc::new(Waiter::default());
    waiter.register();
    let payload = random_bytes(payload, payload as u64);

    let echo_thread = {
        let stop = Arc::clone(&stop);
        spawn("bench-echo", 1, move || {
            echo_loop(api, &echo, to_pinger, &stop).expect("echo loop");
        })
    };
    let (hist_tx, hist_rx) = mpsc::channel();
    let receiver = {
        let (stop, received, waiter) = (Arc::clone(&stop), Arc::clone(&received), waiter);
        spawn("bench-pong", 0, move || {
            let hist =
                pong_loop(api, &pinger_rx, count, &received, &waiter, &stop).expect("pong loop");
            let _ = hist_tx.send(hist);
        })
    };
    let (sent_tx, sent_rx) = mpsc::channel();
    let pacer = spawn("bench-pacer", 0, move || {
        tight_timer_slack();
        let sent = pace_loop(api, &pinger, to_echo, &payload, rate, count).expect("pacer loop");
        let _ = sent_tx.send(sent);
    });
    let _ = pacer.join();
    let sent = sent_rx.recv().unwrap_or(0);
    wait_for(count, || received.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    let _ = echo_thread.join();
    let hist = hist_rx.recv().unwrap_or_else(|_| new_histogram());
    Ok(PingOutcome {
        sent,
        received: received.load(Ordering::Relaxed),
        hist,
    })
}

/// Sends ping *i* at `start + i / rate` or as soon after as the thread wakes; returns the
/// pings sent.
fn pace_loop(
    api: Api,
    sock: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
    rate: f64,
    count: u64,
) -> io::Result<u64> {
    let mut one = payload.to_vec();
    let mut batch = Batch::new(MMSG_BATCH, payload.len(), payload, v4(to)?);
    let start = Instant::now();
    let mut sent = 0;
    while sent < count {
        let now = Instant::now();
        let next = due_at(start, sent, rate);
        if now < next {
            thread::sleep(next - now);
            continue;
        }
        match api {
            Api::Std => {
                wire::put(&mut one, PING, 0, nanos(Instant::now()));
                let _ = sock.send_to(&one, to);
                sent += 1;
            }
            Api::Mmsg => {
                // Every ping due by now, in one call.
                let mut n = 1;
                while n < MMSG_BATCH as u64
                    && sent + n < count
                    && due_at(start, sent + n, rate) <= now
                {
                    n += 1;
                }
                let stamp = nanos(Instant::now());
                batch.send(sock.as_raw_fd(), n as usize, |_, d| {
                    wire::put(d, PING, 0, stamp)
                })?;
                sent += n;
            }
        }
    }
    Ok(sent)
}

fn pong_loop(
    api: Api,
    sock: &UdpSocket,
    count: u64,
    received: &AtomicU64,
    waiter: &Waiter,
    stop: &AtomicBool,
) -> io::Result<hdrhistogram::Histogram<u64>> {
    let mut hist = new_histogram();
    let mut buf = [0u8; BUF];
    let mut batch = Batch::new(MMSG_BATCH, BUF, &[], v4(sock.local_addr()?)?);
    let mut got = 0;
    let mut take = |hist: &mut hdrhistogram::Histogram<u64>, d: &[u8], now: u64| {
        if let Some((PONG, _, stamp)) = wire::get(d) {
            record_rtt(hist, now, stamp);
            got += 1;
            received.store(got, Ordering::Relaxed);
            if got == count {
                waiter.wake();
            }
        }
    };
    while !stop.load(Ordering::Relaxed) && received.load(Ordering::Relaxed) < count {
        let r = match api {
            Api::Std => sock.recv(&mut buf).map(|n| {
                take(&mut hist, &buf[..n], nanos(Instant::now()));
            }),
            Api::Mmsg => batch.recv(sock.as_raw_fd()).map(|n| {
                let now = nanos(Instant::now());
                for i in 0..n {
                    take(&mut hist, batch.datagram(i), now);
                }
            }),
        };
        match r {
            Ok(()) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hist)
}

fn echo_loop(api: Api, sock: &UdpSocket, pinger: SocketAddr, stop: &AtomicBool) -> io::Result<()> {
    let mut buf = [0u8; BUF];
    let mut batch = Batch::new(MMSG_BATCH, BUF, &[], v4(pinger)?);
    while !stop.load(Ordering::Relaxed) {
        let r = match api {
            Api::Std => sock.recv_from(&mut buf).and_then(|(n, from)| {
                if n >= HEADER_LEN && buf[0] == PING {
                    buf[0] = PONG;
                    sock.send_to(&buf[..n], from)?;
                }
                Ok(())
            }),
            Api::Mmsg => batch.recv(sock.as_raw_fd()).and_then(|n| {
                for i in 0..n {
                    if let Some(first) = batch.datagram(i).first_mut() {
                        *first = PONG;
                    }
                }
                batch.send_as_is(sock.as_raw_fd(), n)
            }),
        };
        match r {
            Ok(()) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
