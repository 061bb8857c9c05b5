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
    /// Datagrams the kernel accepted for sending.
    datagrams_out,
    /// Payload bytes the kernel accepted for sending.
    bytes_out,
    /// Incoming datagrams larger than the maximum datagram size: truncated by the kernel
    /// and dropped.
    truncated,
    /// Sends that failed (socket buffer full, unreachable, datagram too large, …); the
    /// datagram is dropped.
    send_errors,
    /// Receive errors other than "would block", including datagrams the io_uring backend
    /// had to discard while draining an overflowed completion queue.
    recv_errors,
    /// io_uring: times a socket's multishot receive stopped because every provided
    /// buffer was in use (it is re-armed; the kernel buffers or drops meanwhile).
    recv_buffers_exhausted,
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
