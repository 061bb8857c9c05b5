//! Runtime configuration and its validation.

use super::RuntimeError;

/// The largest UDP payload over IPv4 (65 535 − 8 byte UDP header − 20 byte IP header).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// The most provided buffers one io_uring buffer ring can hold.
const MAX_RECV_BUFFERS: usize = 32_768;

/// Which backend to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring when the kernel allows it and has what the runtime needs, else portable.
    #[default]
    Auto,
    /// io_uring or fail to start with [`RuntimeError::IoUringUnavailable`].
    IoUring,
    /// epoll with nonblocking sockets, even where io_uring works.
    Portable,
    /// No kernel sockets: endpoints bind virtual loopback addresses in an in-process
    /// network private to the runtime, and datagrams travel between shards through
    /// lock-free queues. Same shards, timers, commands, stats and API; for measuring the
    /// protocol without the kernel and for tests. Reach the endpoints from outside through
    /// [`Runtime::memory_network`](super::Runtime::memory_network). What it models (port
    /// allocation, duplicate binds, reuseport, truncation, drops) is described on
    /// [`MemoryNetwork`](super::MemoryNetwork).
    Memory,
}

/// How to start a [`Runtime`](super::Runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Number of shard threads (≥ 1). Default: the available cores.
    pub shards: usize,
    /// Pin shard `i` to core `i mod cores`. Default: true. Pinning failures are logged,
    /// not fatal.
    pub pin_threads: bool,
    /// Which backend to run. Default: [`BackendChoice::Auto`].
    pub backend: BackendChoice,
    /// Largest datagram received or sent, in bytes (1 ..= 65 507). Larger incoming
    /// datagrams are truncated by the kernel, counted and dropped. Default: 1400.
    pub max_datagram_size: usize,
    /// Receive buffers per shard (a power of two, 1 ..= 32 768): the io_uring
    /// provided-buffer ring size. When all are in use the kernel keeps datagrams in the
    /// socket buffers (and drops what overflows them). The memory backend sizes each
    /// shard's inbox at 16 datagrams per receive buffer (at most 65 536). Default: 1024.
    pub recv_buffers: usize,
    /// `SO_RCVBUF` to request for every socket, or `None` for the system default. Ignored
    /// by the memory backend, as is `socket_send_buffer`.
    pub socket_recv_buffer: Option<usize>,
    /// `SO_SNDBUF` to request for every socket, or `None` for the system default.
    pub socket_send_buffer: Option<usize>,
    /// Ask the kernel to stamp every received datagram (`SO_TIMESTAMPNS`), so each
    /// endpoint learns how long its input waited in the socket buffer
    /// ([`Endpoint::handle_input_delay`](super::Endpoint::handle_input_delay)). Default:
    /// true. The memory backend has no kernel queue and reports no delays. Measured cost
    /// on io_uring with 5000 sockets: a few per cent of throughput at 64 B, about 7–22% at
    /// 1400 B; nothing measurable for one flow (`results/2026-12-06-vm-transport`, run 6).
    pub receive_timestamps: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin_threads: true,
            backend: BackendChoice::Auto,
            max_datagram_size: 1400,
            recv_buffers: 1024,
            socket_recv_buffer: None,
            socket_send_buffer: None,
            receive_timestamps: true,
        }
    }
}

impl RuntimeConfig {
    /// Checks every field, naming the first one out of range.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |field, reason: String| Err(RuntimeError::InvalidConfig { field, reason });
        if self.shards == 0 || self.shards > 4096 {
            return bad("shards", format!("{} is not in 1..=4096", self.shards));
        }
        if self.max_datagram_size == 0 || self.max_datagram_size > MAX_UDP_PAYLOAD {
            return bad(
                "max_datagram_size",
                format!("{} is not in 1..={MAX_UDP_PAYLOAD}", self.max_datagram_size),
            );
        }
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > MAX_RECV_BUFFERS {
            return bad(
                "recv_buffers",
                format!(
                    "{} is not a power of two in 1..={MAX_RECV_BUFFERS}",
                    self.recv_buffers
                ),
            );
        }
        for (field, value) in [
            ("socket_recv_buffer", self.socket_recv_buffer),
            ("socket_send_buffer", self.socket_send_buffer),
        ] {
            if let Some(size) = value {
                if size == 0 || size > i32::MAX as usize {
                    return bad(field, format!("{size} is not in 1..={}", i32::MAX));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: RuntimeConfig) -> &'static str {
        match config.validate() {
            Err(RuntimeError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn default_is_valid() {
        RuntimeConfig::default().validate().unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = RuntimeConfig::default();
        assert_eq!(
            field_of(RuntimeConfig {
                shards: 0,
                ..base.clone()
            }),
            "shards"
        );
        assert_eq!(
            field_of(RuntimeConfig {
                max_datagram_size: 65_508,
                ..base.clone()
            }),
            "max_datagram_size"
        );
        assert_eq!(
            field_of(RuntimeConfig {
                max_datagram_size: 0,
                ..base.clone()
            }),
            "max_datagram_size"
        );
        assert_eq!(
            field_of(RuntimeConfig {
                recv_buffers: 1000,
                ..base.clone()
            }),
            "recv_buffers"
        );
        assert_eq!(
            field_of(RuntimeConfig {
                recv_buffers: 65_536,
                ..base.clone()
            }),
            "recv_buffers"
        );
        assert_eq!(
            field_of(RuntimeConfig {
                socket_recv_buffer: Some(0),
                ..base.clone()
            }),
            "socket_recv_buffer"
        );
        assert_eq!(
            field_of(RuntimeConfig {
                socket_send_buffer: Some(usize::MAX),
                ..base
            }),
            "socket_send_buffer"
        );
    }
}
