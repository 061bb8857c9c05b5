//! The tokio-uring baseline: the one-flow, many-sockets and latency shapes on the
//! `tokio-uring` crate, written with its idiomatic API (`tokio_uring::net::UdpSocket`,
//! `send_to` / `recv_from` on owned buffers, one task per concurrent activity).
//!
//! Every thread runs a tokio-uring runtime of its own (`Runtime::block_on`, which is what
//! `tokio_uring::start` does, but returning set-up errors instead of panicking), pinned to
//! core 0 or 1 like the other baselines. Sockets are bound through std, given
//! [`RECV_BUFFER`](super::RECV_BUFFER) there (tokio-uring has no socket options) and handed
//! over with `UdpSocket::from_std`. Each `send_to` / `recv_from` takes a `Vec<u8>` and
//! gives it back with the result; the buffers are reused, so no payload is copied or
//! allocated per datagram by this code.
//!
//! What tokio-uring's API gives, and so what these rows measure:
//! - one SQE per datagram (`IORING_OP_SENDMSG` / `IORING_OP_RECVMSG`), each with a
//!   `msghdr`, an iovec `Vec` and a socket address boxed per operation;
//! - no multishot receive and no provided buffers (buffer rings): every waiting receive
//!   holds a buffer of its own, so 5000 sockets hold 5000 armed receives and buffers;
//! - no batching of sends beyond what the thread queues before it parks: SQEs are pushed as
//!   operations start and submitted when the runtime is about to park (or the 256-entry
//!   submission queue is full), and completions come back through tokio's epoll on the
//!   ring's file descriptor;
//! - dropping the future of an operation does not cancel it: it stays armed in the kernel
//!   and its result is thrown away when it completes. A receive wrapped in a timeout would
//!   therefore swallow a later datagram, so no receive here has one: the one-flow sender
//!   reads acknowledgements in a task of their own and waits on them with a timeout instead,
//!   and threads stop by ending their runtime, which cancels what is still armed.
//!
//! Shapes:
//! - One flow ([`UringFlow`]): the sender thread runs a sending task (one `send_to`
//!   awaited at a time, within the same window as the other baselines) and an
//!   acknowledgement-reading task on the same socket; the receiver thread runs one task
//!   that counts each datagram and acknowledges with `send_to` to its source.
//! - Many sockets ([`UringRelay`]): the sockets round robin on two threads, one task per
//!   socket looping `recv_from` and forwarding the token from that socket to a random other
//!   one (a socket of the other thread is only an address: the datagram crosses threads
//!   through the kernel, as with the runtime).
//! - Latency ([`latency`]): a pinger thread (a pacing task and a pong-reading task on one
//!   socket) and an echo thread. The pacer sleeps on tokio's timer, which has millisecond
//!   resolution, so pings due within the same millisecond go out back to back.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use hdrhistogram::Histogram;
use hearsay::runtime::Stats;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;
use tokio_uring::net::UdpSocket;

use super::latency::{due_at, new_histogram, record_rtt, PingOutcome};
use super::probe::{deal, wait_for, Probe, RelayRuns, Waiter};
use super::runtime::split_hops;
use super::threads::{io_err, run_flow, socket, spawn, BUF};
use super::wire::{self, Counter, Window, ACK, DATA, HEADER_LEN, PING, PONG, TOKEN};
use super::{nanos, Harness, Outcome, Unavailable, SHARDS, WRITE_OFF};
use crate::sys::random_bytes;

/// A tokio-uring runtime with the crate's defaults (a 256-entry submission queue).
fn runtime() -> io::Result<tokio_uring::Runtime> {
    tokio_uring::Runtime::new(&tokio_uring::builder())
}

fn unavailable(e: io::Error) -> Unavailable {
    Unavailable(format!("io_uring (tokio-uring runtime): {e}"))
}

/// Whether tokio-uring can run here: `Err` when its runtime (an io_uring instance) cannot be
/// set up, e.g. where io_uring is disabled or forbidden by a seccomp filter.
pub(crate) fn check() -> Result<(), Unavailable> {
    runtime().map(drop).map_err(unavailable)
}

/// Set-up reports of the runtime threads.
type Ready = mpsc::Sender<Result<(), Unavailable>>;

/// Spawns a thread pinned to `core` that reports on `ready` whether its tokio-uring runtime
/// could be set up and, if so, runs `body` on it to completion. Ending the runtime drops its
/// tasks and cancels the operations they left armed.
fn spawn_runtime<F, Fut>(name: &str, core: usize, ready: Ready, body: F) -> JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    spawn(name, core, move || match runtime() {
        Ok(rt) => {
            let _ = ready.send(Ok(()));
            rt.block_on(body());
        }
        Err(e) => {
            let _ = ready.send(Err(unavailable(e)));
        }
    })
}

/// Waits for the set-up reports of `n` threads.
fn await_ready(
    ready: &mpsc::Receiver<Result<(), Unavailable>>,
    n: usize,
) -> Result<(), Unavailable> {
    for _ in 0..n {
        ready
            .recv()
            .map_err(|_| Unavailable("a tokio-uring thread ended during set-up".into()))??;
    }
    Ok(())
}

/// Receives one datagram into `buf` (emptied first; its capacity is the room offered) and
/// returns the buffer with the datagram's length and source.
async fn recv_into(
    sock: &UdpSocket,
    mut buf: Vec<u8>,
) -> (io::Result<(usize, SocketAddr)>, Vec<u8>) {
    buf.clear();
    sock.recv_from(buf).await
}

// ---------------------------------------------------------------------------------------------
// One flow

/// Acknowledgements read by the sender's reading task, waiting for the sending task.
#[derive(Default)]
struct Acks {
    queue: RefCell<VecDeque<(u32, u64)>>,
    /// A receive error that ended the reading task.
    failed: RefCell<Option<io::Error>>,
    /// Signalled at every acknowledgement (and at the error).
    arrived: Notify,
}

/// The one-flow measurement on two threads with a tokio-uring runtime each.
pub(crate) struct UringFlow {
    jobs: Option<UnboundedSender<(u32, u64)>>,
    finished: mpsc::Receiver<()>,
    probe: Arc<Probe>,
    stop_receiver: Arc<Notify>,
    threads: Vec<JoinHandle<()>>,
}

impl UringFlow {
    pub(crate) fn new(payload: usize) -> Result<Self, Unavailable> {
        let tx = socket()?;
        let rx = socket()?;
        let to_rx = rx.local_addr().map_err(io_err("local_addr"))?;
        let probe = Arc::new(Probe::new());
        let stop_receiver = Arc::new(Notify::new());
        let (jobs, job_rx) = unbounded_channel();
        let (done_tx, finished) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let payload = random_bytes(payload, payload as u64);
        let sender = {
            let probe = Arc::clone(&probe);
            spawn_runtime(
                "tokio-uring-sender",
                0,
                ready_tx.clone(),
                move || async move {
                    let sock = UdpSocket::from_std(tx);
                    send_loop(sock, to_rx, payload, &probe, job_rx, &done_tx)
                        .await
                        .expect("tokio-uring sender loop");
                },
            )
        };
        let receiver = {
            let (probe, stop) = (Arc::clone(&probe), Arc::clone(&stop_receiver));
            spawn_runtime("tokio-uring-receiver", 1, ready_tx, move || async move {
                let sock = UdpSocket::from_std(rx);
                tokio_uring::spawn(async move {
                    recv_loop(sock, &probe)
                        .await
                        .expect("tokio-uring receiver loop");
                });
                stop.notified().await;
            })
        };
        let flow = Self {
            jobs: Some(jobs),
            finished,
            probe,
            stop_receiver,
            threads: vec![sender, receiver],
        };
        // On failure, dropping `flow` stops and joins whichever thread did start.
        await_ready(&ready, 2)?;
        Ok(flow)
    }
}

/// The sending task: runs each job of `jobs` within the window, then reports on `done`.
async fn send_loop(
    sock: UdpSocket,
    to: SocketAddr,
    payload: Vec<u8>,
    probe: &Probe,
    mut jobs: UnboundedReceiver<(u32, u64)>,
    done: &mpsc::Sender<()>,
) -> io::Result<()> {
    let sock = Rc::new(sock);
    let acks = Rc::new(Acks::default());
    tokio_uring::spawn(read_acks(Rc::clone(&sock), Rc::clone(&acks)));
    let mut buf = payload;
    while let Some((run, count)) = jobs.recv().await {
        let mut w = Window::start(run, count);
        while !w.done() {
            // Queued acknowledgements are taken only when the window is full, as the other
            // baselines read theirs only then.
            while w.room() == 0 {
                loop {
                    let next = acks.queue.borrow_mut().pop_front();
                    let Some((r, c)) = next else { break };
                    w.on_ack(r, c);
                }
                if let Some(e) = acks.failed.borrow_mut().take() {
                    return Err(e);
                }
                if w.room() > 0 {
                    break;
                }
                // Waiting on the notification, not on a receive: a timed-out receive would
                // stay armed and swallow a later acknowledgement.
                if tokio::time::timeout(WRITE_OFF, acks.arrived.notified())
                    .await
                    .is_err()
                {
                    w.write_off();
                    probe.add_write_off();
                }
            }
            wire::put(&mut buf, DATA, run, w.sent);
            let (sent, back) = sock.send_to(buf, to).await;
            buf = back;
            // A refused send is a lost datagram (and shows in SndbufErrors).
            drop(sent);
            w.sent += 1;
            probe.set_sent(run, w.sent);
        }
        let _ = done.send(());
    }
    Ok(())
}

/// The sender's reading task: queues every acknowledgement and signals the sending task.
async fn read_acks(sock: Rc<UdpSocket>, acks: Rc<Acks>) {
    let mut buf = Vec::with_capacity(BUF);
    loop {
        let (got, back) = recv_into(&sock, buf).await;
        buf = back;
        match got {
            Ok((n, _)) => {
                if let Some((ACK, run, count)) = wire::get(&buf[..n]) {
                    acks.queue.borrow_mut().push_back((run, count));
                    acks.arrived.notify_one();
                }
            }
            Err(e) => {
                *acks.failed.borrow_mut() = Some(e);
                acks.arrived.notify_one();
                return;
            }
        }
    }
}

/// The receiver's task: counts the data of the current run and acknowledges to its source.
async fn recv_loop(sock: UdpSocket, probe: &Probe) -> io::Result<()> {
    let mut counter = Counter::default();
    let mut buf = Vec::with_capacity(BUF);
    let mut ack = vec![0u8; HEADER_LEN];
    loop {
        let (got, back) = recv_into(&sock, buf).await;
        buf = back;
        let (n, from) = got?;
        if let Some((DATA, run, _)) = wire::get(&buf[..n]) {
            counter.on_data(probe, run, nanos(Instant::now()));
            if let Some((r, c)) = counter.take_ack(probe) {
                wire::put(&mut ack, ACK, r, c);
                let (sent, back) = sock.send_to(ack, from).await;
                ack = back;
                // A lost acknowledgement is covered by the next one or a write-off.
                drop(sent);
            }
        }
    }
}

impl Harness for UringFlow {
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
        "tokio-uring UdpSocket send_to / recv_from (one SQE each), a runtime per thread".into()
    }
}

impl Drop for UringFlow {
    fn drop(&mut self) {
        self.stop_receiver.notify_one();
        self.jobs = None; // ends the sender's job loop
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Many sockets

/// What the relay threads share with the measuring thread.
struct RelayShared {
    /// Every socket's address, by socket index.
    peers: Vec<SocketAddr>,
    /// Runs and their counts, one receiving context per thread.
    runs: RelayRuns,
}

/// A socket index drawn uniformly from all `n` but `me`.
fn other_socket(rng: &mut SmallRng, me: usize, n: usize) -> usize {
    let to = rng.random_range(0..n - 1);
    to + usize::from(to >= me)
}

/// The many-sockets measurement: the relay of [`super::runtime::RelayEp`] on tokio-uring,
/// one task per socket, the sockets round robin on [`SHARDS`] threads.
pub(crate) struct UringRelay {
    shared: Arc<RelayShared>,
    /// Per thread: injections of `(run, hops of each token)`.
    inject: Vec<UnboundedSender<(u32, Vec<u64>)>>,
    threads: Vec<JoinHandle<()>>,
    tokens: u64,
}

impl UringRelay {
    pub(crate) fn new(sockets: usize, payload: usize, tokens: u64) -> Result<Self, Unavailable> {
        assert!(sockets >= SHARDS, "every relay thread needs a socket");
        let mut owned: Vec<Vec<(usize, StdUdpSocket)>> = (0..SHARDS).map(|_| Vec::new()).collect();
        let mut peers = Vec::with_capacity(sockets);
        for i in 0..sockets {
            let s = socket().map_err(|Unavailable(why)| {
                Unavailable(format!("socket {i} of {sockets}: {why}"))
            })?;
            peers.push(s.local_addr().map_err(io_err("local_addr"))?);
            owned[i % SHARDS].push((i, s));
        }
        let shared = Arc::new(RelayShared {
            peers,
            runs: RelayRuns::new(SHARDS),
        });
        let payload = random_bytes(payload, payload as u64);
        let (ready_tx, ready) = mpsc::channel();
        let mut inject = Vec::with_capacity(SHARDS);
        let mut threads = Vec::with_capacity(SHARDS);
        for (slot, mine) in owned.into_iter().enumerate() {
            let (tx, rx) = unbounded_channel();
            inject.push(tx);
            let shared = Arc::clone(&shared);
            let payload = payload.clone();
            let name = format!("tokio-uring-relay-{slot}");
            threads.push(spawn_runtime(&name, slot, ready_tx.clone(), move || {
                relay_thread(slot, mine, shared, payload, rx)
            }));
        }
        let relay = Self {
            shared,
            inject,
            threads,
            tokens,
        };
        // On failure, dropping `relay` stops and joins whichever thread did start.
        await_ready(&ready, SHARDS)?;
        Ok(relay)
    }
}

/// One relay thread: a task per socket of `mine`, and the injections of `inject` sent from
/// the first of them, until the injection channel closes.
async fn relay_thread(
    slot: usize,
    mine: Vec<(usize, StdUdpSocket)>,
    shared: Arc<RelayShared>,
    payload: Vec<u8>,
    mut inject: UnboundedReceiver<(u32, Vec<u64>)>,
) {
    let mut hosted = Vec::with_capacity(mine.len());
    for (me, s) in mine {
        let sock = Rc::new(UdpSocket::from_std(s));
        tokio_uring::spawn(relay(me, slot, Rc::clone(&sock), Arc::clone(&shared)));
        hosted.push((me, sock));
    }
    let (me, injector) = hosted
        .first()
        .cloned()
        .expect("every relay thread hosts a socket");
    let mut rng = SmallRng::seed_from_u64(!(me as u64));
    let mut buf = payload;
    while let Some((run, hops)) = inject.recv().await {
        for h in hops {
            wire::put(&mut buf, TOKEN, run, h);
            let to = shared.peers[other_socket(&mut rng, me, shared.peers.len())];
            let (sent, back) = injector.send_to(buf, to).await;
            buf = back;
            // A refused send is a dropped token; the run ends by GIVE_UP.
            drop(sent);
        }
    }
}

/// The task of socket `me`: counts each token of the current run and forwards it, from this
/// socket, to a random other socket while it has receptions left.
async fn relay(me: usize, slot: usize, sock: Rc<UdpSocket>, shared: Arc<RelayShared>) {
    let mut rng = SmallRng::seed_from_u64(me as u64);
    let mut buf = Vec::with_capacity(BUF);
    loop {
        let (got, back) = recv_into(&sock, buf).await;
        buf = back;
        let (n, _) = got.expect("tokio-uring relay: recv_from");
        let Some((TOKEN, run, hops)) = wire::get(&buf[..n]) else {
            continue;
        };
        if !shared.runs.arrive(slot, run, nanos(Instant::now())) {
            continue; // a token of an abandoned run
        }
        if hops > 1 {
            // The received datagram goes on as it is, with one reception less.
            wire::put(&mut buf, TOKEN, run, hops - 1);
            let to = shared.peers[other_socket(&mut rng, me, shared.peers.len())];
            let (sent, back) = sock.send_to(buf, to).await;
            buf = back;
            // A refused send is a dropped token; the run ends by GIVE_UP.
            drop(sent);
        } else {
            shared.runs.finish();
        }
    }
}

impl Harness for UringRelay {
    fn run(&mut self, count: u64) -> Outcome {
        let runs = &self.shared.runs;
        let hops = split_hops(count, self.tokens);
        let received_before = runs.received();
        let run = runs.begin(hops.len());
        // Half of the tokens from a socket of each thread.
        let parts = deal(&hops, self.inject.len());
        let start = Instant::now();
        for (tx, hops) in self.inject.iter().zip(parts) {
            tx.send((run, hops)).expect("the relay thread runs");
        }
        let (received, last) = runs.wait(count, received_before);
        Outcome::new(start, count, received, last, 0)
    }

    fn runtime_stats(&self) -> Option<Stats> {
        None
    }

    fn describe(&self) -> String {
        format!(
            "tokio-uring on {} threads, {} sockets (a recv_from task each), {} tokens in flight",
            self.threads.len(),
            self.shared.peers.len(),
            self.tokens
        )
    }
}

impl Drop for UringRelay {
    fn drop(&mut self) {
        self.inject.clear(); // ends the relay threads' runtimes
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Latency

/// Paced ping-pong on tokio-uring: the pinger thread (core 0) runs a pacing task and a
/// pong-reading task on one socket, the echo thread (core 1) sends every ping back.
pub(crate) fn latency(payload: usize, rate: f64, count: u64) -> Result<PingOutcome, Unavailable> {
    let pinger = socket()?;
    let echo = socket()?;
    let to_echo = echo.local_addr().map_err(io_err("local_addr"))?;
    let received = Arc::new(AtomicU64::new(0));
    let waiter = Arc::new(Waiter::default());
    waiter.register();
    let stop_echo = Arc::new(Notify::new());
    let stop_pinger = Arc::new(Notify::new());
    let (ready_tx, ready) = mpsc::channel();
    let (sent_tx, sent_rx) = mpsc::channel();
    let (hist_tx, hist_rx) = mpsc::channel();
    let payload = random_bytes(payload, payload as u64);

    let echo_thread = {
        let stop = Arc::clone(&stop_echo);
        spawn_runtime(
            "tokio-uring-echo",
            1,
            ready_tx.clone(),
            move || async move {
                tokio_uring::spawn(echo_loop(UdpSocket::from_std(echo)));
                stop.notified().await;
            },
        )
    };
    let pinger_thread = {
        let (stop, received) = (Arc::clone(&stop_pinger), Arc::clone(&received));
        spawn_runtime("tokio-uring-pinger", 0, ready_tx, move || async move {
            let sock = Rc::new(UdpSocket::from_std(pinger));
            let hist = Rc::new(RefCell::new(new_histogram()));
            tokio_uring::spawn(pong_loop(
                Rc::clone(&sock),
                count,
                received,
                waiter,
                Rc::clone(&hist),
            ));
            let sent = pace(&sock, to_echo, payload, rate, count).await;
            let _ = sent_tx.send(sent);
            stop.notified().await;
            let _ = hist_tx.send(hist.replace(new_histogram()));
        })
    };
    let sent = await_ready(&ready, 2).map(|()| {
        let sent = sent_rx.recv().unwrap_or(0);
        wait_for(count, || received.load(Ordering::Relaxed));
        sent
    });
    stop_echo.notify_one();
    stop_pinger.notify_one();
    let _ = pinger_thread.join();
    let _ = echo_thread.join();
    Ok(PingOutcome {
        sent: sent?,
        received: received.load(Ordering::Relaxed),
        hist: hist_rx.recv().unwrap_or_else(|_| new_histogram()),
    })
}

/// Sends ping *i* at `start + i / rate` or as soon after as tokio's timer wakes the task;
/// returns the pings sent.
async fn pace(sock: &UdpSocket, to: SocketAddr, payload: Vec<u8>, rate: f64, count: u64) -> u64 {
    let start = Instant::now();
    let mut buf = payload;
    let mut sent = 0;
    while sent < count {
        let next = due_at(start, sent, rate);
        if Instant::now() < next {
            tokio::time::sleep_until(next.into()).await;
            continue;
        }
        wire::put(&mut buf, PING, 0, nanos(Instant::now()));
        let (res, back) = sock.send_to(buf, to).await;
        buf = back;
        // A refused ping is a lost one.
        drop(res);
        sent += 1;
    }
    sent
}

/// The pinger's reading task: records half of each round trip.
async fn pong_loop(
    sock: Rc<UdpSocket>,
    count: u64,
    received: Arc<AtomicU64>,
    waiter: Arc<Waiter>,
    hist: Rc<RefCell<Histogram<u64>>>,
) {
    let mut buf = Vec::with_capacity(BUF);
    let mut got = 0;
    loop {
        let (res, back) = recv_into(&sock, buf).await;
        buf = back;
        let (n, _) = res.expect("tokio-uring pinger: recv_from");
        let now = nanos(Instant::now());
        if let Some((PONG, _, stamp)) = wire::get(&buf[..n]) {
            record_rtt(&mut hist.borrow_mut(), now, stamp);
            got += 1;
            received.store(got, Ordering::Relaxed);
            if got == count {
                waiter.wake();
            }
        }
    }
}

/// The echo task: sends every ping back to its source as a pong.
async fn echo_loop(sock: UdpSocket) {
    let mut buf = Vec::with_capacity(BUF);
    loop {
        let (res, back) = recv_into(&sock, buf).await;
        buf = back;
        let (n, from) = res.expect("tokio-uring echo: recv_from");
        if n >= HEADER_LEN && buf[0] == PING {
            buf[0] = PONG;
            let (sent, back) = sock.send_to(buf, from).await;
            buf = back;
            // A refused pong is a lost one.
            drop(sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Flow, Transport, RELAY_TOKENS, WINDOW};
    use std::time::Duration;

    /// The runtime's set-up error where io_uring is unavailable; `None` where it runs.
    fn unavailable_here() -> Option<Unavailable> {
        match check() {
            Ok(()) => None,
            Err(why) => {
                eprintln!("skipping tokio-uring: {why}");
                Some(why)
            }
        }
    }

    #[test]
    fn check_agrees_with_set_up() {
        let flow = Flow::one_flow(Transport::TokioUring, 64);
        match unavailable_here() {
            None => assert!(flow.is_ok()),
            Some(_) => {
                let why = flow.err().expect("set-up fails where the check does");
                assert!(why.0.contains("io_uring"), "{why}");
            }
        }
    }

    #[test]
    fn one_flow_delivers_full_datagrams_and_stops() {
        if unavailable_here().is_some() {
            return;
        }
        let mut flow = Flow::one_flow(Transport::TokioUring, 1400).expect("tokio-uring runs here");
        assert!(flow.describe().contains("tokio-uring"));
        for count in [1, 2 * WINDOW + 1] {
            let r = flow.run(count);
            assert_eq!(r.sent, count);
            // Loopback can drop under load; a smoke test asks only that most arrive.
            assert!(r.received * 10 >= r.sent * 9, "{r:?}");
            assert!(r.runtime.is_none());
        }
        // Dropping stops both runtimes and joins their threads.
        let begun = Instant::now();
        drop(flow);
        assert!(begun.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn relay_counts_runs_apart_and_stops() {
        if unavailable_here().is_some() {
            return;
        }
        let mut flow =
            Flow::many_sockets(Transport::TokioUring, 40, 64).expect("tokio-uring runs here");
        let d = flow.describe();
        assert!(d.contains("2 threads, 40 sockets"), "{d}");
        assert!(d.contains(&format!("{RELAY_TOKENS} tokens")), "{d}");
        // Fewer receptions than tokens: one hop each, so a run is exactly its injections.
        let r = flow.run(100);
        assert!(r.received <= 100 && r.received * 10 >= 900, "{r:?}");
        let r = flow.run(3000);
        assert!(r.received <= 3000 && r.received * 10 >= 27_000, "{r:?}");
        let begun = Instant::now();
        drop(flow);
        assert!(begun.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn other_socket_is_uniform_and_never_self() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[other_socket(&mut rng, 2, 4)] += 1;
        }
        assert_eq!(seen[2], 0);
        assert!(seen.iter().enumerate().all(|(i, &n)| i == 2 || n > 1100));
    }
}
