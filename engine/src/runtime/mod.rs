//! The UDP runtime: one thread per core, each owning its sockets and the sans-IO
//! endpoints placed on it.
//!
//! The runtime hosts [`Endpoint`]s. An endpoint never touches a socket or a clock: the
//! runtime feeds it datagrams, timer ticks and commands, each with `now`, and drains the
//! datagrams it wants to send through [`Endpoint::poll_transmit`] and its next deadline
//! through [`Endpoint::poll_timeout`]. The same endpoint therefore runs unchanged under
//! every backend here, under the deterministic simulator and in the load generator.
//!
//! # Shape
//!
//! A [`Runtime`] starts `shards` threads (one per core by default, pinned). Each shard
//! owns one backend instance (an io_uring, epoll or memory driver), the sockets of its
//! endpoints, the endpoints themselves (a slab indexed by a local slot), a timer heap for
//! all of them and a pool of send buffers. Nothing on the hot path is shared between
//! shards: other threads reach a shard only through its lock-free command queue
//! (crossbeam `SegQueue`) and an eventfd that wakes it.
//!
//! One shard iteration: wait for completions/readiness or the earliest timer → hand each
//! received datagram to its endpoint → run due timers → drain the command queue → for
//! every endpoint touched, drain `poll_transmit` and queue the sends → submit them in one
//! batch.
//!
//! # Backends
//!
//! The platform code sits behind one swap point, `backend::Driver`, with three
//! implementations:
//! - `backend::uring`: io_uring through the `io-uring` crate, with a provided-buffer ring
//!   and one multishot `RecvMsg` per socket, `IORING_OP_SEND` with a destination for
//!   sends, registered sockets, deferred task work, a multishot poll on the eventfd for
//!   wake-ups and the `submit_with_args` timeout for timers. `tokio-uring` was on the
//!   design card but is unmaintained and has neither multishot receive nor buffer rings;
//!   measured side by side it reaches about half of this backend's rate, so the runtime
//!   drives the ring itself (figures in the backend's docs).
//! - `backend::portable`: epoll through `mio` with nonblocking std sockets, receiving
//!   with `recvmmsg` and sending with `sendmmsg` in batches of 32 per socket. It gives up
//!   kernel-provided buffers and ring submission but runs wherever io_uring is missing or
//!   forbidden, as in many container sandboxes. Sends the kernel refuses with "would
//!   block" wait in a bounded per-socket queue for writable readiness.
//! - `backend::memory` ([`BackendChoice::Memory`]): no kernel at all. Endpoints bind
//!   virtual loopback addresses in a network private to the runtime and datagrams move
//!   between shards through lock-free queues, so the load generator can measure protocol
//!   cost apart from kernel cost and the transport suite runs without sockets. See
//!   [`MemoryNetwork`] for what it models.
//!
//! With [`BackendChoice::Auto`] the runtime probes io_uring at start and falls back to the
//! portable backend when the ring cannot be set up or lacks an opcode or feature it needs;
//! [`Runtime::backend`] says which backend runs and why.
//!
//! # Datagram limits
//!
//! Datagrams larger than [`RuntimeConfig::max_datagram_size`] are truncated by the kernel
//! (by the memory network on the memory backend); the runtime detects this, counts it in
//! [`Stats::truncated`] and drops the datagram (a truncated frame is never handed to an
//! endpoint).
//!
//! # Failure containment
//!
//! A panic inside an endpoint callback is caught; that endpoint is dropped, its socket
//! closed, the panic counted in [`Stats::panics`] and logged; the shard keeps serving the
//! other endpoints.
//!
//! # Example
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use hearsay::runtime::{Endpoint, Runtime, RuntimeConfig};
//!
//! /// Sends every datagram back where it came from.
//! struct Echo { out: Vec<(SocketAddr, Vec<u8>)> }
//!
//! impl Endpoint for Echo {
//!     type Command = ();
//!     fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, data: &mut [u8]) {
//!         self.out.push((from, data.to_vec()));
//!     }
//!     fn handle_timeout(&mut self, _now: Instant) {}
//!     fn handle_command(&mut self, _now: Instant, _cmd: ()) {}
//!     fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
//!         let (to, data) = self.out.pop()?;
//!         buf.extend_from_slice(&data);
//!         Some(to)
//!     }
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//! }
//!
//! let rt = Runtime::start(RuntimeConfig::default())?;
//! let id = rt.add_endpoint("127.0.0.1:0".parse()?, |_local| Echo { out: Vec::new() })?;
//! println!("{id:?} on {}", rt.backend());
//! rt.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
mod config;
mod shard;
mod stats;
mod wake;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};

pub use backend::io_uring_support;
pub use backend::memory::{MemoryNetwork, MemorySocket};
pub use config::{BackendChoice, RuntimeConfig, MAX_UDP_PAYLOAD};
pub use stats::Stats;

use backend::memory::{Binding, Network};
use backend::BoundSocket;
use shard::{Msg, Shared};

/// A sans-IO state machine hosted by the runtime.
///
/// Every input carries `now`; the endpoint must not read a clock or touch a socket.
/// After any input the runtime drains [`poll_transmit`](Self::poll_transmit) until it
/// returns `None`, then reads [`poll_timeout`](Self::poll_timeout) once.
pub trait Endpoint: Send + 'static {
    /// A local request from another thread, delivered through [`Runtime::command`].
    type Command: Send + 'static;

    /// A datagram arrived on this endpoint's socket from `from`. The buffer is the
    /// runtime's; the endpoint may decode it in place but must copy what it keeps.
    /// The runtime never parses the bytes: garbage is the endpoint's to reject.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]);

    /// The datagram about to be handed to [`handle_datagram`](Self::handle_datagram)
    /// waited `delay` in the socket's receive buffer before this endpoint's shard read it
    /// (from the kernel's receive timestamp, [`RuntimeConfig::receive_timestamps`]). A
    /// growing delay means the endpoint reads its input late: its peers' answers reach it
    /// that much after they arrived. Called only where the socket gives stamps; the
    /// default ignores it.
    fn handle_input_delay(&mut self, now: Instant, delay: std::time::Duration) {
        let _ = (now, delay);
    }

    /// The deadline last returned by [`poll_timeout`](Self::poll_timeout) has passed
    /// (`now` is at or after it). Spurious calls must be harmless.
    fn handle_timeout(&mut self, now: Instant);

    /// A command sent through [`Runtime::command`].
    fn handle_command(&mut self, now: Instant, cmd: Self::Command);

    /// Writes one datagram into `buf` (given cleared, with capacity of at least the
    /// configured maximum datagram size) and returns its destination, or returns `None`
    /// when there is nothing to send. A datagram longer than the maximum is dropped and
    /// counted as a send error.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr>;

    /// The instant at which [`handle_timeout`](Self::handle_timeout) should next be
    /// called, if any.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// Names one endpoint hosted by a [`Runtime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointId {
    shard: u32,
    key: u64,
    addr: SocketAddr,
}

impl EndpointId {
    /// The local address of the endpoint's socket (with the port the system chose when
    /// the bind address had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shard (thread) hosting the endpoint.
    pub fn shard(&self) -> usize {
        self.shard as usize
    }
}

/// Which backend drives the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring with provided buffers and multishot receive.
    IoUring,
    /// epoll (mio) with nonblocking sockets.
    Portable,
    /// The in-process memory network, no kernel sockets.
    Memory,
}

/// The backend in use and, when [`BackendChoice::Auto`] fell back, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// The backend every shard runs.
    pub kind: BackendKind,
    /// Why io_uring was not used, when the choice was [`BackendChoice::Auto`] and it fell
    /// back to [`BackendKind::Portable`].
    pub fallback_reason: Option<String>,
}

impl std::fmt::Display for BackendInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.kind, &self.fallback_reason) {
            (BackendKind::IoUring, _) => f.write_str("io_uring"),
            (BackendKind::Memory, _) => f.write_str("memory (in-process network)"),
            (BackendKind::Portable, None) => f.write_str("portable (epoll)"),
            (BackendKind::Portable, Some(why)) => {
                write!(f, "portable (epoll), io_uring unavailable: {why}")
            }
        }
    }
}

/// Errors of the runtime API.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A [`RuntimeConfig`] field is out of range; nothing was started.
    #[error("invalid runtime config `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// [`BackendChoice::IoUring`] was requested but io_uring cannot be used here.
    #[error("io_uring unavailable: {0}")]
    IoUringUnavailable(String),
    /// A shard thread could not be started or could not set up its backend.
    #[error("shard {shard} failed to start: {source}")]
    ShardStart {
        /// The shard index.
        shard: usize,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating, configuring or binding an endpoint's socket failed (on the memory
    /// backend: the address is taken or is not a loopback address); no endpoint was added.
    #[error("cannot bind UDP socket to {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The endpoint id names a shard this runtime does not have.
    #[error("unknown endpoint {0:?}")]
    UnknownEndpoint(EndpointId),
    /// A shard thread panicked outside endpoint code (a runtime bug); seen at shutdown.
    #[error("shard {0} panicked")]
    ShardPanicked(usize),
}

/// A running thread-per-core UDP runtime hosting endpoints of type `E`.
///
/// Dropping it shuts it down like [`Runtime::shutdown`], ignoring errors.
pub struct Runtime<E: Endpoint> {
    shards: Vec<ShardHandle<E>>,
    next_shard: AtomicUsize,
    next_key: AtomicU64,
    backend: BackendInfo,
    config: RuntimeConfig,
    /// The in-process network, on the memory backend.
    memory: Option<Arc<Network>>,
}

struct ShardHandle<E: Endpoint> {
    shared: Arc<Shared<E>>,
    thread: Option<JoinHandle<()>>,
}

impl<E: Endpoint> std::fmt::Debug for Runtime<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("shards", &self.shards.len())
            .field("backend", &self.backend)
            .field("config", &self.config)
            .finish()
    }
}

impl<E: Endpoint> Runtime<E> {
    /// Validates `config`, picks the backend and starts the shard threads.
    pub fn start(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        config.validate()?;
        let backend = backend::choose(&config)?;
        if let Some(why) = &backend.fallback_reason {
            tracing::warn!("io_uring unavailable ({why}); falling back to the portable backend");
        }
        let cores = if config.pin_threads {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut rt = Runtime {
            shards: Vec::with_capacity(config.shards),
            next_shard: AtomicUsize::new(0),
            next_key: AtomicU64::new(0),
            backend,
            config,
            memory: None,
        };
        // Every shard's waker exists before any shard starts: the memory network wakes
        // shards through them.
        let mut shareds = Vec::with_capacity(rt.config.shards);
        for index in 0..rt.config.shards {
            let waker = wake::Waker::new().map_err(|source| RuntimeError::ShardStart {
                shard: index,
                source,
            })?;
            shareds.push(Arc::new(Shared::<E>::new(waker)));
        }
        if rt.backend.kind == BackendKind::Memory {
            let wakers = shareds.iter().map(|s| Arc::clone(&s.waker)).collect();
            rt.memory = Some(Network::new(&rt.config, wakers));
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        for (index, shared) in shareds.into_iter().enumerate() {
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            let thread = {
                let shared = Arc::clone(&shared);
                let config = rt.config.clone();
                let kind = rt.backend.kind;
                let memory = rt.memory.clone();
                let ready = ready_tx.clone();
                std::thread::Builder::new()
                    .name(format!("hearsay-shard-{index}"))
                    .spawn(move || {
                        if let Some(core) = core {
                            if !core_affinity::set_for_current(core) {
                                tracing::warn!("shard {index}: cannot pin to core {}", core.id);
                            }
                        }
                        shard::run(index, kind, &config, memory, &shared, ready);
                    })
                    .map_err(|source| RuntimeError::ShardStart {
                        shard: index,
                        source,
                    })?
            };
            rt.shards.push(ShardHandle {
                shared,
                thread: Some(thread),
            });
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..rt.config.shards {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((shard, Err(source))) => {
                    failure.get_or_insert(RuntimeError::ShardStart { shard, source });
                }
                Err(_) => {
                    failure.get_or_insert(RuntimeError::ShardPanicked(0));
                    break;
                }
            }
        }
        match failure {
            // `rt` drops here, stopping the shards that did start.
            Some(err) => Err(err),
            None => Ok(rt),
        }
    }

    /// The backend the shards run and, for [`BackendChoice::Auto`], why it fell back.
    pub fn backend(&self) -> &BackendInfo {
        &self.backend
    }

    /// The configuration the runtime was started with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The number of shards (threads).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The in-process network the endpoints live on, when the runtime was started with
    /// [`BackendChoice::Memory`] (`None` on the kernel backends). Bind a [`MemorySocket`]
    /// on it to talk to the endpoints from outside the runtime.
    pub fn memory_network(&self) -> Option<MemoryNetwork> {
        self.memory
            .as_ref()
            .map(|net| MemoryNetwork::new(Arc::clone(net)))
    }

    /// Binds a UDP socket to `bind` and hosts the endpoint `make` builds for it (given the
    /// actual local address) on the next shard, round robin. The endpoint starts on its
    /// shard shortly after this returns; datagrams that reach its address before then
    /// wait for it.
    pub fn add_endpoint<F>(&self, bind: SocketAddr, make: F) -> Result<EndpointId, RuntimeError>
    where
        F: FnOnce(SocketAddr) -> E + Send + 'static,
    {
        let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        let (socket, local) = self.bind(bind, shard, false)?;
        Ok(self.place(shard, socket, local, Box::new(make)))
    }

    /// Binds one port on every shard with `SO_REUSEPORT` (the kernel spreads incoming
    /// flows over the sockets) and hosts `make(shard, local_addr)` behind each. With port
    /// 0 the port is chosen once and reused for the other shards. Returns one id per shard.
    pub fn add_reuseport<F>(
        &self,
        bind: SocketAddr,
        make: F,
    ) -> Result<Vec<EndpointId>, RuntimeError>
    where
        F: Fn(usize, SocketAddr) -> E + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        let mut bind = bind;
        let mut sockets = Vec::with_capacity(self.shards.len());
        for shard in 0..self.shards.len() {
            let (socket, local) = self.bind(bind, shard, true)?;
            bind = local;
            sockets.push((socket, local));
        }
        let ids = sockets
            .into_iter()
            .enumerate()
            .map(|(shard, (socket, local))| {
                let make = Arc::clone(&make);
                self.place(
                    shard,
                    socket,
                    local,
                    Box::new(move |addr| make(shard, addr)),
                )
            })
            .collect();
        Ok(ids)
    }

    /// Queues `cmd` for the endpoint `id`, waking its shard. A command for an endpoint
    /// that no longer exists (it panicked) is dropped and counted in
    /// [`Stats::commands_dropped`].
    pub fn command(&self, id: EndpointId, cmd: E::Command) -> Result<(), RuntimeError> {
        let shard = self
            .shards
            .get(id.shard as usize)
            .ok_or(RuntimeError::UnknownEndpoint(id))?;
        shard.shared.push(Msg::Command { key: id.key, cmd });
        Ok(())
    }

    /// Counters of all shards, merged; on the memory backend also the drops of
    /// [`MemorySocket`] sends, which belong to no shard.
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for shard in &self.shards {
            total.merge(&shard.shared.stats.snapshot());
        }
        if let Some(net) = &self.memory {
            total.merge(&net.sockets_stats());
        }
        total
    }

    /// Counters of each shard, in shard order.
    pub fn shard_stats(&self) -> Vec<Stats> {
        self.shards
            .iter()
            .map(|s| s.shared.stats.snapshot())
            .collect()
    }

    /// Stops every shard: each flushes what its endpoints queued for sending, cancels its
    /// receives, closes its sockets and exits; all threads are joined before this returns.
    pub fn shutdown(mut self) -> Result<(), RuntimeError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), RuntimeError> {
        for shard in &self.shards {
            if shard.thread.is_some() {
                shard.shared.push(Msg::Shutdown);
            }
        }
        let mut result = Ok(());
        for (index, shard) in self.shards.iter_mut().enumerate() {
            if let Some(thread) = shard.thread.take() {
                if thread.join().is_err() && result.is_ok() {
                    result = Err(RuntimeError::ShardPanicked(index));
                }
            }
        }
        result
    }

    /// Binds `bind` for an endpoint of `shard`: a kernel socket, or an address of the
    /// memory network.
    fn bind(
        &self,
        bind: SocketAddr,
        shard: usize,
        reuseport: bool,
    ) -> Result<(BoundSocket, SocketAddr), RuntimeError> {
        match &self.memory {
            Some(net) => {
                let binding = Binding::for_shard(net, bind, shard, reuseport)
                    .map_err(|source| RuntimeError::Bind { addr: bind, source })?;
                let local = binding.local();
                Ok((BoundSocket::Memory(binding), local))
            }
            None => {
                let (socket, local) = self.bind_socket(bind, reuseport)?;
                Ok((BoundSocket::Udp(socket), local))
            }
        }
    }

    fn bind_socket(
        &self,
        bind: SocketAddr,
        reuseport: bool,
    ) -> Result<(std::net::UdpSocket, SocketAddr), RuntimeError> {
        let err = |source| RuntimeError::Bind { addr: bind, source };
        let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
            .map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        if let Some(size) = self.config.socket_recv_buffer {
            socket.set_recv_buffer_size(size).map_err(err)?;
        }
        if let Some(size) = self.config.socket_send_buffer {
            socket.set_send_buffer_size(size).map_err(err)?;
        }
        if reuseport {
            socket.set_reuse_port(true).map_err(err)?;
        }
        socket.bind(&bind.into()).map_err(err)?;
        let socket: std::net::UdpSocket = socket.into();
        // A kernel that refuses stamps leaves the endpoint without delay reports; the
        // datagrams themselves are unaffected.
        if self.config.receive_timestamps && !backend::enable_rx_timestamps(&socket) {
            tracing::debug!(addr = %bind, "receive timestamps unavailable");
        }
        let local = socket.local_addr().map_err(err)?;
        Ok((socket, local))
    }

    fn place(
        &self,
        shard: usize,
        socket: BoundSocket,
        local: SocketAddr,
        make: Box<dyn FnOnce(SocketAddr) -> E + Send>,
    ) -> EndpointId {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.shards[shard].shared.push(Msg::Add {
            key,
            socket,
            local,
            make,
        });
        EndpointId {
            shard: shard as u32,
            key,
            addr: local,
        }
    }
}

impl<E: Endpoint> Drop for Runtime<E> {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
