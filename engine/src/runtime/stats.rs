//! Per-shard atomic counters, merged on read.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Runtime counters: totals since start, except the gauges `endpoints` and
        /// `queue_depth`, which are current values.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        /// The counters one shard updates (relaxed atomics: each is written by one
        /// thread, except `queue_depth`, and read by anyone).
        #[derive(Debug, Default)]
        pub(crate) struct ShardStats {
            $( pub(crate) $name: AtomicU64, )*
        }

        impl ShardStats {
            pub(crate) fn snapshot(&self) -> Stats {
                Stats { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }

        impl Stats {
            pub(crate) fn merge(&mut self, other: &Stats) {
                $( self.$name += other.$name; )*
            }
        }
    };
}

counters! {
    /// Datagrams handed to endpoints.
    datagrams_in,
    /// Payload bytes handed to endpoints.
    bytes_in,
    /// Datagrams the kernel accepted for sending (memory backend: put in the
    /// destination's queue).
    datagrams_out,
    /// Payload bytes of `datagrams_out`.
    bytes_out,
    /// Incoming datagrams larger than the maximum datagram size: truncated by the kernel
    /// and dropped.
    truncated,
    /// Sends that failed (unreachable, datagram too large, wrong address family, socket
    /// closed before its queued sends went out, …); the datagram is dropped. A full
    /// socket send buffer is not an error on the portable backend: see `send_queue_full`.
    send_errors,
    /// Portable backend: datagrams dropped because their socket's queue of sends waiting
    /// for the kernel (after it answered "would block") was full.
    send_queue_full,
    /// Receive errors other than "would block", including datagrams the io_uring backend
    /// had to discard while draining an overflowed completion queue.
    recv_errors,
    /// io_uring: times a socket's multishot receive stopped because every provided
    /// buffer was in use (it is re-armed; the kernel buffers or drops meanwhile).
    recv_buffers_exhausted,
    /// io_uring: datagrams read directly (`recvmmsg`) from sockets whose multishot
    /// receive delivered a full batch in one reap, besides the ring's receives.
    hot_reads,
    /// Memory backend: datagrams dropped because the destination's queue was full
    /// (counted on the sending shard). The kernel backends' equivalent, a full socket
    /// receive buffer, is dropped by the kernel unseen.
    recv_queue_full,
    /// Memory backend: datagrams sent to an address nobody has bound, dropped. The kernel
    /// accepts these silently, so the other backends count them in `datagrams_out`.
    unroutable,
    /// Endpoints hosted now.
    endpoints,
    /// Endpoint callbacks that panicked (each removed its endpoint).
    panics,
    /// Timer expiries delivered to endpoints.
    timeouts,
    /// Commands delivered to endpoints.
    commands,
    /// Commands for endpoints that no longer exist.
    commands_dropped,
    /// Messages waiting in the shards' command queues now.
    queue_depth,
}

impl ShardStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        // Single writer per counter: a load and a store avoid the locked RMW on the hot
        // path without losing updates.
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
}
