//! io_uring backend, driven directly through the `io-uring` crate.
//!
//! Why not `tokio-uring` (which the design card named): it has had no release since 0.5
//! (2024), owns its own executor, and its API is one SQE per operation with an allocation
//! for each (`msghdr`, iovec, address), with neither multishot receive nor provided-buffer
//! rings, which are the two features that make io_uring worth it for many small
//! datagrams. The transport benchmark runs it as a row of its own, written the way its API
//! is meant to be used (`bench/src/transport/tokio_uring_baseline.rs`); in
//! `results/2026-12-06-vm-transport` it reaches about half this backend's one-flow rate
//! and two thirds of its 5000-socket rate. Driving the ring ourselves costs this one file
//! of careful `unsafe`.
//!
//! Per shard: one ring; one provided-buffer ring (group 0) of `recv_buffers` buffers,
//! each `io_uring_recvmsg_out` header + `sockaddr_storage` + `max_datagram_size` bytes;
//! one multishot `RecvMsg` per socket, re-armed whenever a completion comes without
//! `IORING_CQE_F_MORE` (buffers exhausted, error); a buffer goes back to the ring as soon
//! as its endpoint has handled the datagram. Sends are `IORING_OP_SEND` with the
//! destination in the SQE (Linux 6.1; `SendMsg` before), whose buffer and address live in
//! a boxed pool slot until the completion arrives; they are submitted together with the
//! next wait (one `io_uring_enter` per iteration, none when completions are already
//! waiting and nothing is queued; `flush` is a no-op). Sockets sit in a sparse
//! registered-file table at their slot index, so no operation looks up or reference-counts
//! the file. The ring is set up with `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1; else
//! `COOP_TASKRUN`, Linux 5.19): the completion work of every multishot receive waits in
//! the ring until the shard enters the kernel for events, rather than interrupting or
//! waking the shard thread per datagram. The shard's eventfd is watched by a multishot
//! poll; timers are the timeout of `io_uring_enter` (`IORING_ENTER_EXT_ARG`).
//! `results/2026-12-06-vm-transport` gives the figures: with the three changes the
//! 5000-socket, 64-byte rate measured 1.51×, 1.24× and 1.51× the portable backend's in
//! three runs (1.38× in one with `COOP_TASKRUN` instead of deferred task work, 1.40× before
//! the changes; the portable backend, unchanged, is the control), the spread coming from
//! the io_uring side; deferred task work alone was worth about 10% in interleaved short
//! runs. `results/2026-12-07-vm-transport-cost` splits a datagram's CPU time under `perf`
//! (`scripts/transport-cost`): at 64 B the kernel's UDP path is 3.4–3.8 µs of this
//! backend's 5.6–6.4 µs and costs the portable backend the same; this file's user space is
//! 0.4–0.5 µs; the kernel's own io_uring work is 1.4–1.6 µs, most of it the receives' task
//! work (0.8–0.9 µs, cache misses on cold requests and sockets). Even with no user-space
//! time the ratio to the portable backend would have been 1.22–1.43× in those runs.
//!
//! Requirements (probed at start; `Auto` falls back to the portable backend otherwise):
//! `io_uring_setup` allowed, opcodes `RECVMSG`, `SENDMSG`, `POLL_ADD`, `ASYNC_CANCEL`,
//! features `EXT_ARG` and `NODROP`, and provided-buffer rings (Linux 5.19; multishot
//! `RecvMsg` needs 6.0). Not done: a one-shot `RecvMsg` fallback for kernels with io_uring
//! but without buffer rings — those run the portable backend.
//!
//! Shutdown cancels every receive and waits (bounded) for the last completions of
//! receives and sends before the buffers are freed; if the kernel does not answer in time
//! the buffers are leaked rather than freed under it.

use std::alloc::{self, Layout};
use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use socket2::SockAddr;

use super::mmsg::{RecvBatch, BATCH};
use super::{
    parse_rx_timestamp, parse_sockaddr, waited, wall_clock, BoundSocket, Driver, Sink, SlotKey,
    CONTROL_LEN, GENERATION_MASK,
};
use crate::runtime::stats::ShardStats;
use crate::runtime::wake::Waker;
use crate::runtime::RuntimeConfig;

const TAG_RECV: u64 = 1;
const TAG_SEND: u64 = 2;
const TAG_WAKE: u64 = 3;
const TAG_CANCEL: u64 = 4;
const BUFFER_GROUP: u16 = 0;
const SQ_ENTRIES: u32 = 1024;
/// `struct io_uring_recvmsg_out`: namelen, controllen, payloadlen, flags.
const RECVMSG_OUT_LEN: usize = 16;
const NAME_LEN: usize = size_of::<libc::sockaddr_storage>();
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

fn user_data(tag: u64, generation: u32, index: u32) -> u64 {
    (tag << 60) | (u64::from(generation & GENERATION_MASK) << 32) | u64::from(index)
}

fn split(user_data: u64) -> (u64, u32, u32) {
    (
        user_data >> 60,
        ((user_data >> 32) as u32) & GENERATION_MASK,
        user_data as u32,
    )
}

/// Checks that this kernel and sandbox let the shards run io_uring as configured.
pub(crate) fn probe(config: &RuntimeConfig) -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    if !ring.params().is_feature_ext_arg() {
        return Err("kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11)".into());
    }
    if !ring.params().is_feature_nodrop() {
        return Err("kernel lacks IORING_FEAT_NODROP (Linux 5.5)".into());
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe failed: {e}"))?;
    for (code, name) in [
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("io_uring opcode {name} unsupported"));
        }
    }
    let bufs = BufRing::new(config.recv_buffers.min(8), 64)
        .map_err(|e| format!("cannot allocate a buffer ring: {e}"))?;
    bufs.register(&ring)
        .map_err(|e| format!("provided-buffer rings unavailable (Linux 5.19): {e}"))?;
    // The probe ring has no operations in flight, so dropping it (then `bufs`) is safe.
    drop(ring);
    drop(bufs);
    Ok(())
}

/// Whether the running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: uname only writes into the struct we pass.
    let release = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return false;
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    };
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// How an operation names a socket: by its descriptor, or, once registered, by its index
/// in the registered-file table with `IOSQE_FIXED_FILE` (what `types::Fixed` does).
fn file(fd: RawFd, slot: u32, fixed: bool) -> (types::Fd, squeue::Flags) {
    if fixed {
        (types::Fd(slot as RawFd), squeue::Flags::FIXED_FILE)
    } else {
        (types::Fd(fd), squeue::Flags::empty())
    }
}

/// Largest registered-file table a shard asks for.
const MAX_FIXED_FILES: u32 = 1 << 16;

/// Registers an empty (sparse) file table sized to the open-file limit, which the kernel
/// also applies to it; returns its size, or 0 when the kernel refuses (then every socket
/// is used through its descriptor).
fn register_file_table(ring: &IoUring) -> u32 {
    // SAFETY: getrlimit only writes into the struct we pass.
    let soft = unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur
    };
    let size = u32::try_from(soft).unwrap_or(u32::MAX).min(MAX_FIXED_FILES);
    match ring.submitter().register_files_sparse(size) {
        Ok(()) => size,
        Err(_) => 0,
    }
}

/// A provided-buffer ring and the buffers it hands to the kernel.
struct BufRing {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    memory: NonNull<u8>,
    memory_layout: Layout,
    count: u16,
    buf_size: usize,
    /// Our copy of the tail; the kernel reads the shared one.
    tail: u16,
}

impl BufRing {
    fn new(count: usize, buf_size: usize) -> io::Result<Self> {
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large");
        let count16 = u16::try_from(count).map_err(|_| too_big())?;
        let entries_layout = Layout::from_size_align(count * size_of::<BufRingEntry>(), 4096)
            .map_err(|_| too_big())?;
        let memory_layout =
            Layout::from_size_align(count.checked_mul(buf_size).ok_or_else(too_big)?, 64)
                .map_err(|_| too_big())?;
        // SAFETY: both layouts have a non-zero size (count ≥ 1, buf_size ≥ 1).
        let (entries, memory) = unsafe {
            (
                alloc::alloc_zeroed(entries_layout).cast::<BufRingEntry>(),
                alloc::alloc_zeroed(memory_layout),
            )
        };
        let (Some(entries), Some(memory)) = (NonNull::new(entries), NonNull::new(memory)) else {
            alloc::handle_alloc_error(entries_layout);
        };
        let mut ring = BufRing {
            entries,
            entries_layout,
            memory,
            memory_layout,
            count: count16,
            buf_size,
            tail: 0,
        };
        for bid in 0..count16 {
            ring.recycle(bid);
        }
        Ok(ring)
    }

    fn register(&self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the entry array is page aligned, `count` entries long and lives until
        // `self` drops; the owner drops `self` only after the ring (and so the
        // registration) is gone, and after every receive using the group has completed.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries.as_ptr() as u64,
                self.count,
                BUFFER_GROUP,
                0,
            )
        }
    }

    /// The whole buffer `bid`, which the kernel has handed back to us.
    fn buffer(&mut self, bid: u16) -> &mut [u8] {
        assert!(bid < self.count);
        // SAFETY: (1) `bid < count`, so the range lies inside `memory`; (2) the kernel
        // returned buffer `bid` in a completion and does not touch it again until
        // `recycle(bid)` puts it back in the ring; (3) `&mut self` makes this the only
        // reference we hold into the buffer memory.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.memory.as_ptr().add(usize::from(bid) * self.buf_size),
                self.buf_size,
            )
        }
    }

    /// Gives buffer `bid` (back) to the kernel.
    fn recycle(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: (1) `index < count`, inside the entry array; (2) the slot at our tail is
        // not visible to the kernel until the tail store below publishes it, so writing
        // it cannot race with the kernel; (3) `addr`, `len`, `bid` are the only fields
        // written — entry 0's `resv` doubles as the shared tail and is left alone here.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(index);
            entry.set_addr(self.memory.as_ptr().add(usize::from(bid) * self.buf_size) as u64);
            entry.set_len(self.buf_size as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: `entries` is the ring base, its first entry initialised (zeroed at
        // allocation); the tail field is a naturally aligned u16 the kernel only reads,
        // so viewing it as an AtomicU16 for a release store is sound.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both blocks came from `alloc_zeroed` with these layouts; the owner only
        // lets this run once the kernel can no longer use them (see `UringDriver::drop`).
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            alloc::dealloc(self.memory.as_ptr(), self.memory_layout);
        }
    }
}

/// Everything a `SendMsg` points to, boxed so its address is stable until completion.
struct SendSlot {
    buf: Vec<u8>,
    addr: SockAddr,
    iov: libc::iovec,
    msg: libc::msghdr,
}

struct Socket {
    generation: u32,
    socket: UdpSocket,
    /// Datagrams its multishot receive delivered in the current reap (`burst_reap`).
    burst: u32,
    burst_reap: u32,
    armed: bool,
    /// Whether the socket sits in the ring's registered-file table at its slot index.
    fixed: bool,
}

/// The io_uring driver of one shard.
pub(crate) struct UringDriver {
    // Declared first so it drops first: the kernel lets go of everything below.
    ring: IoUring,
    bufs: Option<BufRing>,
    /// Template for multishot receives: only `msg_namelen` and `msg_controllen` matter
    /// (the kernel lays each datagram's name and control messages out in its provided
    /// buffer by them); boxed so its address is stable while receives are armed.
    recv_msghdr: Box<libc::msghdr>,
    /// Boxed on purpose: the kernel holds pointers into each slot, which must not move
    /// when the Vec grows.
    #[allow(clippy::vec_box)]
    sends: Vec<Box<SendSlot>>,
    free_sends: Vec<u32>,
    sends_in_flight: usize,
    sockets: Vec<Option<Socket>>,
    /// Size of the sparse registered-file table (0 when registration failed): a socket
    /// whose slot index is below it is registered there, so its operations skip the
    /// per-operation file lookup and reference count.
    fixed_files: u32,
    /// Whether sends use `IORING_OP_SEND` with a destination instead of `SENDMSG`.
    sendto: bool,
    /// Receives cancelled on removal whose final completion has not arrived yet.
    cancelling: usize,
    pool: Vec<Vec<u8>>,
    completions: Vec<(u64, i32, u32)>,
    /// The system clock when the current batch of completions was taken, to tell how long
    /// each datagram waited from its receive timestamp.
    wall: Duration,
    /// Reaps so far (wrapping): tells a socket's burst count of this reap from an old one.
    reaps: u32,
    /// Sockets whose multishot receive delivered a full batch in this reap, and sockets
    /// still busy after the last poll's direct reads.
    hot: Vec<u32>,
    /// Sockets found still busy by this poll's direct reads (reused between polls).
    still_hot: Vec<u32>,
    /// Buffers for reading hot sockets directly (allocated on first use).
    direct: Option<RecvBatch>,
    max_datagram: usize,
    stats: Arc<ShardStats>,
    waker: Arc<Waker>,
    closed: bool,
    drained: bool,
}

/// Datagrams one socket's multishot receive delivers in one reap that make it hot: the
/// kernel's batch per socket (`MULTISHOT_MAX_RETRY`, 32) is then likely cut short.
const HOT_BURST: u32 = 32;
/// `recvmmsg` calls on a hot socket after a reap (up to 2048 datagrams, the portable
/// backend's budget).
const HOT_CALLS: usize = 64;

/// Takes datagrams reaped where no endpoint can be called (while making room in an
/// overflowed completion queue, or at shutdown) and counts them as receive errors.
struct DiscardSink<'a>(&'a ShardStats);

impl Sink for DiscardSink<'_> {
    fn datagram(
        &mut self,
        _: Instant,
        _: SlotKey,
        _: SocketAddr,
        _: &mut [u8],
        _: Option<Duration>,
    ) {
        ShardStats::add(&self.0.recv_errors, 1);
    }
}

fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct of integers and raw pointers, for which all
    // zero bytes are a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

impl UringDriver {
    pub(crate) fn new(
        config: &RuntimeConfig,
        stats: Arc<ShardStats>,
        waker: Arc<Waker>,
    ) -> io::Result<Self> {
        // SINGLE_ISSUER | DEFER_TASKRUN (Linux 6.1): the completion work of every
        // multishot receive waits in the ring until this thread next enters the kernel for
        // events, instead of being queued as task work (and waking the thread) per
        // datagram; only the shard thread that built the ring ever submits to it, as
        // SINGLE_ISSUER requires, and TASKRUN_FLAG makes `submit` ask for events when work
        // is pending. Older kernels get COOP_TASKRUN (Linux 5.19), the same idea run at
        // every enter, or else a plain ring.
        let attempts: [fn(&mut io_uring::Builder); 3] = [
            |b| {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag();
            },
            |b| {
                b.setup_coop_taskrun();
            },
            |_| {},
        ];
        let mut ring = None;
        let mut last_error = None;
        for attempt in attempts {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(SQ_ENTRIES * 8);
            attempt(&mut builder);
            match builder.build(SQ_ENTRIES) {
                Ok(r) => {
                    ring = Some(r);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let Some(ring) = ring else {
            return Err(last_error.unwrap_or_else(|| io::Error::other("no io_uring")));
        };
        // Sends name their destination in the SQE (`IORING_OP_SEND` with an address, Linux
        // 6.1), which spares the kernel copying a msghdr per datagram; older kernels,
        // which reject the address, get `SENDMSG`.
        let sendto = kernel_at_least(6, 1);
        let bufs = BufRing::new(
            config.recv_buffers,
            RECVMSG_OUT_LEN + NAME_LEN + CONTROL_LEN + config.max_datagram_size,
        )?;
        bufs.register(&ring)?;
        let fixed_files = register_file_table(&ring);
        let mut recv_msghdr = Box::new(zeroed_msghdr());
        recv_msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        // Room for the receive timestamp of sockets that stamp datagrams.
        recv_msghdr.msg_controllen = CONTROL_LEN as _;
        let mut driver = UringDriver {
            ring,
            bufs: Some(bufs),
            recv_msghdr,
            sends: Vec::new(),
            free_sends: Vec::new(),
            sends_in_flight: 0,
            sockets: Vec::new(),
            fixed_files,
            sendto,
            cancelling: 0,
            pool: Vec::new(),
            completions: Vec::with_capacity(SQ_ENTRIES as usize * 8),
            wall: Duration::ZERO,
            reaps: 0,
            hot: Vec::new(),
            still_hot: Vec::new(),
            direct: None,
            max_datagram: config.max_datagram_size,
            stats,
            waker,
            closed: false,
            drained: true,
        };
        driver.arm_wake();
        Ok(driver)
    }

    /// Queues `entry`, submitting first when the submission queue is full.
    ///
    /// # Safety
    ///
    /// Every buffer, iovec, msghdr and sockaddr `entry` points to must stay valid (and
    /// unmoved) until the operation's final completion has been reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: the caller guarantees the pointed-to memory outlives the operation.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    tracing::error!("io_uring submit failed: {e}");
                }
                // EBUSY: the completion queue overflowed; make room by reaping.
                let stats = Arc::clone(&self.stats);
                self.reap(Instant::now(), &mut DiscardSink(&stats));
            }
        }
    }

    fn arm_wake(&mut self) {
        let entry = opcode::PollAdd::new(types::Fd(self.waker.fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data(TAG_WAKE, 0, 0));
        // SAFETY: a poll references no user memory; the eventfd is kept open by the
        // `Arc<Waker>` this driver holds (and the kernel holds its own file reference).
        unsafe { self.push(&entry) };
    }

    fn arm_recv(&mut self, slot: u32) {
        let Some(Some(sock)) = self.sockets.get_mut(slot as usize) else {
            return;
        };
        sock.armed = true;
        let (target, flags) = file(sock.socket.as_raw_fd(), slot, sock.fixed);
        let entry = opcode::RecvMsgMulti::new(target, &*self.recv_msghdr, BUFFER_GROUP)
            .build()
            .flags(flags)
            .user_data(user_data(TAG_RECV, sock.generation, slot));
        // SAFETY: the msghdr is boxed in `self` and never changed after `new`; it and
        // the buffer ring outlive every receive, because `close` (run at the latest by
        // `Drop`) cancels and reaps all receives before they are freed, or leaks them.
        unsafe { self.push(&entry) };
    }

    fn live(&self, slot: u32, generation: u32) -> bool {
        matches!(self.sockets.get(slot as usize), Some(Some(s)) if s.generation == generation)
    }

    /// Moves every available completion into `self.completions`, then handles them.
    /// Sockets whose receive delivered a full batch are noted in `hot`; [`Driver::poll`]
    /// reads them further (never a reap that discards, which would lose what it read).
    fn reap<S: Sink>(&mut self, now: Instant, sink: &mut S) {
        self.reaps = self.reaps.wrapping_add(1);
        loop {
            self.completions.clear();
            self.completions.extend(
                self.ring
                    .completion()
                    .map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
            );
            if self.completions.is_empty() {
                return;
            }
            self.wall = wall_clock();
            for i in 0..self.completions.len() {
                let (data, result, flags) = self.completions[i];
                self.complete(now, data, result, flags, sink);
            }
        }
    }

    fn complete<S: Sink>(
        &mut self,
        now: Instant,
        data: u64,
        result: i32,
        flags: u32,
        sink: &mut S,
    ) {
        let (tag, generation, index) = split(data);
        match tag {
            TAG_RECV => {
                let live = self.live(index, generation);
                if let Some(bid) = cqueue::buffer_select(flags) {
                    if result >= 0 && live {
                        self.deliver(
                            now,
                            SlotKey {
                                slot: index,
                                generation,
                            },
                            bid,
                            result as usize,
                            sink,
                        );
                    }
                    if let Some(bufs) = self.bufs.as_mut() {
                        bufs.recycle(bid);
                    }
                }
                if result == -libc::ENOBUFS {
                    ShardStats::add(&self.stats.recv_buffers_exhausted, 1);
                } else if result < 0 && result != -libc::ECANCELED {
                    ShardStats::add(&self.stats.recv_errors, 1);
                }
                if !cqueue::more(flags) {
                    if live {
                        if let Some(Some(sock)) = self.sockets.get_mut(index as usize) {
                            sock.armed = false;
                        }
                        if !self.closed {
                            self.arm_recv(index);
                        }
                    } else {
                        self.cancelling = self.cancelling.saturating_sub(1);
                    }
                }
            }
            TAG_SEND => {
                if result >= 0 {
                    ShardStats::add(&self.stats.datagrams_out, 1);
                    ShardStats::add(&self.stats.bytes_out, result as u64);
                } else {
                    ShardStats::add(&self.stats.send_errors, 1);
                }
                let buf = std::mem::take(&mut self.sends[index as usize].buf);
                self.recycle(buf);
                self.free_sends.push(index);
                self.sends_in_flight -= 1;
            }
            TAG_WAKE => {
                self.waker.reset();
                if !cqueue::more(flags) && !self.closed {
                    self.arm_wake();
                }
            }
            _ => {} // TAG_CANCEL: the outcome shows on the cancelled receive.
        }
    }

    /// Reads the hot sockets of this reap directly, up to [`HOT_CALLS`] `recvmmsg` calls
    /// each, until they would block.
    ///
    /// The kernel's multishot receive hands over a limited batch per socket each time the
    /// ring runs its deferred work, so a socket far busier than the rest (the seed of a
    /// cold start, among thousands of sockets in a saturated shard) is read a batch per
    /// iteration while its buffer overflows, like the portable backend's read budget
    /// (`RECV_CALLS`). Reading it directly as well keeps it drained. Datagrams of one
    /// socket may then arrive out of order, which UDP allows.
    ///
    /// A socket still busy after its [`HOT_CALLS`] stays hot for the next poll, which then
    /// does not wait, rather than going back to its multishot receive alone. In 5000-node
    /// cold starts the seed then read about twice as many datagrams in the first 5 s
    /// (ALGORITHM.md, known limitation 10).
    fn drain_hot<S: Sink>(&mut self, now: Instant, sink: &mut S) {
        if self.hot.is_empty() {
            return;
        }
        // A socket kept hot from the last poll may have been marked hot again by this
        // reap's completions: read each once.
        self.hot.sort_unstable();
        self.hot.dedup();
        let max = self.max_datagram;
        let mut direct = self.direct.take().unwrap_or_else(|| RecvBatch::new(max));
        self.still_hot.clear();
        while let Some(slot) = self.hot.pop() {
            if self.drain_socket(&mut direct, slot, now, sink) {
                self.still_hot.push(slot);
            }
        }
        std::mem::swap(&mut self.hot, &mut self.still_hot);
        self.direct = Some(direct);
    }

    /// Up to [`HOT_CALLS`] direct reads of the socket in `slot`; returns whether it still
    /// had a full batch to give after the last of them.
    fn drain_socket<S: Sink>(
        &self,
        direct: &mut RecvBatch,
        slot: u32,
        now: Instant,
        sink: &mut S,
    ) -> bool {
        // A socket kept hot from the last poll may have been removed since.
        let Some(Some(s)) = self.sockets.get(slot as usize) else {
            return false;
        };
        let key = SlotKey {
            slot,
            generation: s.generation,
        };
        for _ in 0..HOT_CALLS {
            match direct.recv_into(&s.socket, key, now, sink, &self.stats) {
                Ok(n) => {
                    ShardStats::add(&self.stats.hot_reads, n as u64);
                    if n < BATCH {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        ShardStats::add(&self.stats.recv_errors, 1);
                    }
                    return false;
                }
            }
        }
        true
    }

    fn deliver<S: Sink>(&mut self, now: Instant, key: SlotKey, bid: u16, len: usize, sink: &mut S) {
        let Some(bufs) = self.bufs.as_mut() else {
            return;
        };
        let buffer = bufs.buffer(bid);
        let len = len.min(buffer.len());
        let parsed = match RecvMsgOut::parse(&buffer[..len], &self.recv_msghdr) {
            Ok(out) => {
                let offset = out.payload_data().as_ptr() as usize - buffer.as_ptr() as usize;
                Some((
                    out.is_payload_truncated(),
                    parse_sockaddr(out.name_data()),
                    offset,
                    out.payload_data().len(),
                    parse_rx_timestamp(out.control_data()),
                ))
            }
            Err(()) => None,
        };
        match parsed {
            Some((true, ..)) => ShardStats::add(&self.stats.truncated, 1),
            Some((false, Some(from), offset, n, stamp)) => {
                let waited = waited(self.wall, stamp);
                sink.datagram(now, key, from, &mut buffer[offset..offset + n], waited);
                if let Some(Some(s)) = self.sockets.get_mut(key.slot as usize) {
                    if s.burst_reap != self.reaps {
                        s.burst_reap = self.reaps;
                        s.burst = 0;
                    }
                    s.burst += 1;
                    if s.burst == HOT_BURST {
                        self.hot.push(key.slot);
                    }
                }
            }
            _ => ShardStats::add(&self.stats.recv_errors, 1),
        }
    }
}

impl Driver for UringDriver {
    fn add_socket(&mut self, key: SlotKey, socket: BoundSocket) -> io::Result<()> {
        let socket = socket.into_udp()?;
        let slot = key.slot as usize;
        if self.sockets.len() <= slot {
            self.sockets.resize_with(slot + 1, || None);
        }
        // A socket that cannot be registered (table full or absent) runs unregistered.
        let fixed = key.slot < self.fixed_files
            && self
                .ring
                .submitter()
                .register_files_update(key.slot, &[socket.as_raw_fd()])
                .is_ok();
        self.sockets[slot] = Some(Socket {
            generation: key.generation,
            socket,
            burst: 0,
            burst_reap: 0,
            armed: false,
            fixed,
        });
        self.arm_recv(key.slot);
        Ok(())
    }

    fn remove_socket(&mut self, key: SlotKey) {
        if !self.live(key.slot, key.generation) {
            return;
        }
        let Some(sock) = self.sockets[key.slot as usize].take() else {
            return;
        };
        if sock.armed {
            self.cancelling += 1;
            let entry = opcode::AsyncCancel::new(user_data(TAG_RECV, key.generation, key.slot))
                .build()
                .user_data(user_data(TAG_CANCEL, 0, 0));
            // SAFETY: a cancel references no user memory.
            unsafe { self.push(&entry) };
            // Make the cancel take effect now: the socket's port is released once the
            // receive lets go of its file.
            let _ = self.ring.submit();
        }
        if sock.fixed {
            // Release the table's reference; in-flight operations hold their own.
            let _ = self.ring.submitter().register_files_update(key.slot, &[-1]);
        }
        // Dropping the socket closes our descriptor; the kernel keeps the file until the
        // cancelled receive completes.
        drop(sock);
    }

    fn poll<S: Sink>(&mut self, deadline: Option<Instant>, sink: &mut S) -> io::Result<()> {
        let ready = !self.ring.completion().is_empty();
        if ready && self.ring.submission().is_empty() {
            // Completions are waiting and nothing is queued: reap without entering the
            // kernel (an overflow backlog, if any, is flushed by the next wait).
            self.reap(Instant::now(), sink);
            self.drain_hot(Instant::now(), sink);
            return Ok(());
        }
        let wait = match deadline {
            _ if ready || !self.hot.is_empty() => None,
            None => Some(None),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                (!left.is_zero()).then_some(Some(left))
            }
        };
        let result = match wait {
            None => self.ring.submit(),
            Some(None) => self.ring.submit_and_wait(1),
            Some(Some(left)) => {
                let ts = Timespec::from(left);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match result {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                ) => {}
            Err(e) => return Err(e),
        }
        self.reap(Instant::now(), sink);
        self.drain_hot(Instant::now(), sink);
        Ok(())
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.max_datagram))
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.pool.push(buf);
    }

    fn send(&mut self, key: SlotKey, to: SocketAddr, buf: Vec<u8>) {
        let (fd, fixed) = match self.sockets.get(key.slot as usize) {
            Some(Some(s)) if s.generation == key.generation => (s.socket.as_raw_fd(), s.fixed),
            _ => {
                ShardStats::add(&self.stats.send_errors, 1);
                self.recycle(buf);
                return;
            }
        };
        let index = match self.free_sends.pop() {
            Some(i) => i,
            None => {
                self.sends.push(Box::new(SendSlot {
                    buf: Vec::new(),
                    addr: SockAddr::from(to),
                    iov: libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    },
                    msg: zeroed_msghdr(),
                }));
                (self.sends.len() - 1) as u32
            }
        };
        let slot = &mut *self.sends[index as usize];
        slot.buf = buf;
        slot.addr = SockAddr::from(to);
        let (target, flags) = file(fd, key.slot, fixed);
        let entry = if self.sendto {
            opcode::Send::new(target, slot.buf.as_ptr(), slot.buf.len() as u32)
                .dest_addr(slot.addr.as_ptr().cast())
                .dest_addr_len(slot.addr.len())
                .build()
        } else {
            slot.iov.iov_base = slot.buf.as_mut_ptr().cast();
            slot.iov.iov_len = slot.buf.len();
            slot.msg.msg_name = slot.addr.as_ptr() as *mut libc::c_void;
            slot.msg.msg_namelen = slot.addr.len();
            slot.msg.msg_iov = &mut slot.iov;
            slot.msg.msg_iovlen = 1;
            opcode::SendMsg::new(target, &slot.msg).build()
        }
        .flags(flags)
        .user_data(user_data(TAG_SEND, 0, index));
        self.sends_in_flight += 1;
        // SAFETY: (1) the msghdr, iovec, destination and payload live in the boxed
        // `SendSlot` `index`, whose heap address does not change when `sends` grows;
        // (2) the slot is not reused or freed before this send's completion returns
        // `index` to `free_sends` (`close`/`Drop` wait for, or leak, in-flight sends);
        // (3) the payload Vec is not touched until then, so `iov_base` stays valid.
        unsafe { self.push(&entry) };
    }

    fn flush(&mut self) {
        // The shard calls `flush` at the end of each iteration, right before the next
        // `poll`, which submits queued entries together with its wait: submitting here as
        // well would cost a second `io_uring_enter` per iteration. `close` submits what
        // is left at shutdown.
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.submit_queued();
        self.close_inner();
    }
}

impl UringDriver {
    fn submit_queued(&mut self) {
        if !self.ring.submission().is_empty() {
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    tracing::error!("io_uring submit failed: {e}");
                }
            }
        }
    }

    fn close_inner(&mut self) {
        self.closed = true;
        for slot in 0..self.sockets.len() {
            if let Some(Some(sock)) = self.sockets.get(slot) {
                let key = SlotKey {
                    slot: slot as u32,
                    generation: sock.generation,
                };
                self.remove_socket(key);
            }
        }
        let deadline = Instant::now() + CLOSE_PATIENCE;
        while self.cancelling > 0 || self.sends_in_flight > 0 {
            let now = Instant::now();
            if now >= deadline {
                tracing::error!(
                    "io_uring shard closing with {} receives and {} sends still in flight; \
                     leaking their buffers",
                    self.cancelling,
                    self.sends_in_flight
                );
                self.drained = false;
                return;
            }
            let ts = Timespec::from((deadline - now).min(Duration::from_millis(100)));
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let stats = Arc::clone(&self.stats);
            self.reap(Instant::now(), &mut DiscardSink(&stats));
        }
    }
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        self.close();
        if !self.drained {
            // The kernel may still write into these: never free them.
            std::mem::forget(self.bufs.take());
            std::mem::forget(std::mem::take(&mut self.sends));
        }
        // Fields drop in declaration order: the ring first, then the buffers.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        let d = user_data(TAG_RECV, GENERATION_MASK, u32::MAX);
        assert_eq!(split(d), (TAG_RECV, GENERATION_MASK, u32::MAX));
        assert_eq!(split(user_data(TAG_SEND, 5, 7)), (TAG_SEND, 5, 7));
    }

    #[test]
    fn kernel_release_comparison() {
        assert!(kernel_at_least(0, 0));
        assert!(kernel_at_least(2, 6));
        assert!(!kernel_at_least(999, 0));
    }

    #[test]
    fn parses_both_families() {
        let v4: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let v6: SocketAddr = "[::1]:4243".parse().unwrap();
        for addr in [v4, v6] {
            let raw = SockAddr::from(addr);
            // SAFETY: `as_ptr` points at `len` initialised bytes inside `raw`.
            let bytes = unsafe {
                std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len() as usize)
            };
            assert_eq!(parse_sockaddr(bytes), Some(addr));
        }
        assert_eq!(parse_sockaddr(&[0; 4]), None);
    }
}
