//! Traffic counters of the simulated network.

/// Datagram counters, kept per node and for the whole network.
///
/// Per node, `received*` and `timeouts` belong to the receiving node and every other
/// field to the sending node: a drop is charged to the sender because the receiver may
/// not exist. Counters survive [`Sim::kill`](super::Sim::kill) and
/// [`Sim::restart`](super::Sim::restart): they describe the address, not one incarnation.
///
/// Every datagram an endpoint emits is either `oversize` or `sent`. Network-wide, each
/// sent datagram, plus one copy per `duplicated`, then ends up in exactly one of
/// `received`, `lost`, `dropped_partition`, `dropped_dead`, `dropped_paused`, or is still
/// in flight ([`Sim::in_flight`](super::Sim::in_flight)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SimStats {
    /// Datagrams the endpoint emitted within the size limit, whatever became of them.
    pub sent: u64,
    /// Payload bytes of `sent`.
    pub sent_bytes: u64,
    /// Datagrams handed to an endpoint (duplicates included).
    pub received: u64,
    /// Payload bytes of `received`.
    pub received_bytes: u64,
    /// Datagrams lost to link loss.
    pub lost: u64,
    /// Datagrams dropped because sender and receiver were in different partition groups
    /// when it was sent.
    pub dropped_partition: u64,
    /// Datagrams sent to an address no node has, or reaching a node that was dead when
    /// they arrived (or killed while they waited in its pause queue).
    pub dropped_dead: u64,
    /// Datagrams that reached a paused node whose pause queue was full.
    pub dropped_paused: u64,
    /// Extra copies made by link duplication.
    pub duplicated: u64,
    /// Datagrams longer than the maximum datagram size, dropped before the network.
    pub oversize: u64,
    /// Calls of `handle_timeout`.
    pub timeouts: u64,
}

impl SimStats {
    /// Adds every counter of `other` to this one.
    pub fn merge(&mut self, other: &SimStats) {
        self.sent += other.sent;
        self.sent_bytes += other.sent_bytes;
        self.received += other.received;
        self.received_bytes += other.received_bytes;
        self.lost += other.lost;
        self.dropped_partition += other.dropped_partition;
        self.dropped_dead += other.dropped_dead;
        self.dropped_paused += other.dropped_paused;
        self.duplicated += other.duplicated;
        self.oversize += other.oversize;
        self.timeouts += other.timeouts;
    }
}

/// Per-node counters and their running total, updated together so that reading the
/// total is O(1) on a 10 000-node network.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) nodes: Vec<SimStats>,
    pub(super) total: SimStats,
}

impl Counters {
    /// Applies `bump` to node `node`'s counters and to the total.
    #[inline]
    pub(super) fn add(&mut self, node: usize, bump: impl Fn(&mut SimStats)) {
        bump(&mut self.nodes[node]);
        bump(&mut self.total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_updates_node_and_total() {
        let mut c = Counters {
            nodes: vec![SimStats::default(); 3],
            total: SimStats::default(),
        };
        c.add(1, |s| s.sent += 2);
        c.add(2, |s| s.sent += 5);
        assert_eq!(c.nodes[1].sent, 2);
        assert_eq!(c.nodes[0].sent, 0);
        assert_eq!(c.total.sent, 7);
        let mut sum = SimStats::default();
        c.nodes.iter().for_each(|n| sum.merge(n));
        assert_eq!(sum, c.total);
    }
}
