//! Node configuration and its presets.

use std::net::SocketAddr;
use std::time::Duration;

use crate::codec::{FrameConfig, KeyRing, MAX_METADATA_LEN};
use crate::placement::{NodeId, Scheme};

/// Smallest datagram a node accepts to write: the IPv6 minimum MTU. The largest member
/// update (id, address, [`MAX_METADATA_LEN`] bytes of metadata) plus the frame header and
/// seal fits in it, so every update can be sent.
pub const MIN_NODE_DATAGRAM: usize = 1280;

/// A starting point for the timing parameters, for one kind of network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// A data-centre network: round trips well under a millisecond, rare loss. Probes every
    /// second (memberlist's `DefaultLANConfig` uses the same period).
    Lan,
    /// Links across regions: round trips of tens to hundreds of milliseconds. Probes every
    /// five seconds, with longer timeouts and more patience before declaring death.
    Wan,
    /// One machine (loopback, containers on one host, the simulator): round trips of tens
    /// of microseconds, so every period is five times shorter than on a LAN.
    Local,
}

/// Where this node takes part in placement, and how keys are placed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlacementConfig {
    /// The scheme.
    pub scheme: Scheme,
    /// The key hash seed; every node of a cluster must use the same.
    pub seed: u64,
}

/// Everything a [`Node`](super::Node) needs to run. Build it from a [`Preset`] with
/// [`NodeConfig::new`] and adjust fields; [`NodeConfig::validate`] checks it.
///
/// Every timeout derives from the preset's probe interval, so a cluster tuned for a slower
/// network changes one number. All durations are measured on the local monotonic clock the
/// host passes in as `now`; nothing is compared across nodes.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's identity. Must be unique in the cluster and stable across restarts
    /// (a restart then rejoins as the same member with a higher incarnation).
    /// [`NodeConfig::new`] derives it from the address.
    pub id: NodeId,
    /// The address other members reach this node at.
    pub addr: SocketAddr,
    /// The cluster label: frames of another cluster are refused.
    pub cluster: Vec<u8>,
    /// Seal frames with this key ring (and refuse frames it does not open).
    pub keys: Option<KeyRing>,
    /// Largest datagram written, in bytes (at least [`MIN_NODE_DATAGRAM`]).
    pub max_datagram: usize,
    /// Seed of the node's only random number generator.
    pub rng_seed: u64,
    /// Application metadata announced with this node (at most
    /// [`MAX_METADATA_LEN`] bytes).
    pub metadata: Vec<u8>,
    /// Time between probes of one member (SWIM's protocol period).
    pub probe_interval: Duration,
    /// How long a direct probe waits for its ack before asking others to probe.
    pub probe_timeout: Duration,
    /// Members asked to probe indirectly when a direct probe times out (SWIM's k).
    pub indirect_probes: usize,
    /// Ping the target directly once more when the indirect probes go out (memberlist's
    /// fallback ping, sent over UDP): under loss the first ping or its ack may be the
    /// only thing missing.
    pub retry_direct_probe: bool,
    /// Suspicion timeout multiplier α: the minimum timeout is
    /// `α · max(1, log10 N) · probe_interval`.
    pub suspicion_mult: u32,
    /// Suspicion timeout ceiling multiplier β: a suspicion with no confirmations waits
    /// `β ·` the minimum (Lifeguard).
    pub suspicion_max_mult: u32,
    /// Retransmission multiplier λ: each update is piggybacked `λ · ⌈log10(N + 1)⌉` times.
    pub retransmit_mult: u32,
    /// Updates the dissemination queue holds before they share the retransmission budget:
    /// beyond it, each update is sent `limit · depth / queued` times (never fewer than
    /// [`MIN_TRANSMISSIONS`](crate::dissemination::MIN_TRANSMISSIONS)), and push-pull
    /// anti-entropy settles what gossip leaves out.
    pub broadcast_depth: usize,
    /// Members that, on average, probe a suspect first when they hear of its suspicion from
    /// another node (each does so with probability `suspect_probers / N`), so that a large
    /// cluster does not ping one node from every member in the same period. `None`: every
    /// member that hears of a suspicion probes the suspect first. Default `Some(4)`: with
    /// every member probing, 1000 real nodes took 63–78 s to declare a 1% failure
    /// everywhere, against 16–18 s with four, when every failed probe still raised the
    /// local health score (`engine/ALGORITHM.md` §7.3).
    pub suspect_probers: Option<usize>,
    /// Time between gossip rounds, when updates are pending. Default: a tenth of the
    /// probe interval (100 ms on LAN, half of memberlist's 200 ms). A rumour's last nodes
    /// are the few the first wave of pushes missed, and each further round cuts them by
    /// `e^-fanout`, so this interval sets the tail: with 200 ms the last of 5000 nodes
    /// heard a rumour after 434–639 ms, with 100 ms after 229–307 ms. The budget of each
    /// update is the same, so its sends come in denser bursts: with 5000 nodes sharing two
    /// cores, more of them read late, and a 1% crash was known by all in a median 29.4 s
    /// against 27.6 s (`engine/ALGORITHM.md` §10).
    pub gossip_interval: Duration,
    /// Input delay beyond which this node counts as reading its input late. The host
    /// reports how long each datagram waited in the socket before the node read it
    /// ([`Node::handle_input_delay`](super::Node::handle_input_delay)); beyond this
    /// delay the node's own queue could hold an ack or a refutation it has not read yet,
    /// and more traffic only makes the queue longer. So while it lasts (a reading holds
    /// for two to four probe intervals after the datagram that showed it), the node defers the
    /// gossip rounds and push-pull rounds it starts (answers to its peers still go out), a
    /// probe that got no answer raises no suspicion, and an expiring suspicion waits out
    /// the delay (up to its longest timeout). Default: a fifth of the probe interval on
    /// LAN and Local (200 ms on LAN), a tenth on WAN.
    pub input_lag_limit: Duration,
    /// Members each gossip round (and each immediate push of a new update) goes to.
    pub gossip_fanout: usize,
    /// Time between push-pull anti-entropy rounds with a random live member.
    pub push_pull_interval: Duration,
    /// Time between anti-entropy rounds with a random dead member, so partitions heal.
    pub dead_gossip_interval: Duration,
    /// How long dead and left members are remembered.
    pub tombstone_ttl: Duration,
    /// First delay between join attempts; it doubles up to `join_retry_max`, with ±25%
    /// jitter.
    pub join_retry: Duration,
    /// Longest delay between join attempts.
    pub join_retry_max: Duration,
    /// Ceiling of the local health score (Lifeguard's S): probe timing stretches by up to
    /// `awareness_max + 1` times.
    pub awareness_max: u32,
    /// Placement to maintain from the view, published through the node's router. `None`
    /// keeps no placement (the load generator's thousands of nodes, for instance).
    pub placement: Option<PlacementConfig>,
    /// How long placement waits after a membership change before rebuilding, so that a
    /// burst of changes costs one rebuild.
    pub placement_debounce: Duration,
    /// How long a leaving node keeps gossiping its departure before it stops.
    pub leave_linger: Duration,
    /// Events kept for [`Node::poll_event`](super::Node::poll_event) before new ones are
    /// dropped (and counted).
    pub event_capacity: usize,
    /// Drop frames whose sender is a known live member at another address: a node that
    /// claims another's identity from its own address cannot speak for it.
    pub verify_source: bool,
    /// Replication neighbours: members that receive this node's CRDT deltas and
    /// acknowledge them.
    pub crdt_neighbours: usize,
    /// Deltas buffered per partition at most; neighbours further behind are repaired by
    /// anti-entropy.
    pub crdt_buffer_cap: usize,
    /// Time between CRDT replication rounds while a neighbour has not acknowledged every
    /// delta sent to it: each round sends the unacknowledged runs again. A new local or
    /// remote delta asks for a round at once, at most every quarter of this interval.
    pub crdt_round_interval: Duration,
    /// Time between CRDT anti-entropy rounds with a random member.
    pub crdt_sync_interval: Duration,
}

impl NodeConfig {
    /// The preset's configuration for a node at `addr` in cluster `cluster`; the id is a hash
    /// of the address and the RNG seed a hash of the id.
    pub fn new(preset: Preset, addr: SocketAddr, cluster: &[u8]) -> Self {
        let id = NodeId(xxhash_rust::xxh3::xxh3_64(addr.to_string().as_bytes()));
        let p = match preset {
            Preset::Lan => Duration::from_secs(1),
            Preset::Wan => Duration::from_secs(5),
            Preset::Local => Duration::from_millis(200),
        };
        // `round_div`: the input lag limit and the CRDT round interval are p/5 on LAN and
        // Local (200 ms on LAN), p/10 on WAN; gossip rounds are p/10 everywhere.
        let (timeout_frac, suspicion_mult, round_div) = match preset {
            Preset::Lan | Preset::Local => (0.5, 4, 5),
            Preset::Wan => (0.6, 6, 10),
        };
        Self {
            id,
            addr,
            cluster: cluster.to_vec(),
            keys: None,
            max_datagram: crate::codec::DEFAULT_MAX_DATAGRAM,
            rng_seed: crate::membership::mix64(id.0 ^ 0x6865_6172_7361_7900),
            metadata: Vec::new(),
            probe_interval: p,
            probe_timeout: p.mul_f64(timeout_frac),
            indirect_probes: 5,
            retry_direct_probe: true,
            suspicion_mult,
            suspicion_max_mult: 6,
            retransmit_mult: 4,
            broadcast_depth: 64,
            suspect_probers: Some(4),
            gossip_interval: p / 10,
            input_lag_limit: p / round_div,
            gossip_fanout: 3,
            push_pull_interval: p * 15,
            dead_gossip_interval: p * 10,
            tombstone_ttl: p * 300,
            join_retry: p / 5,
            join_retry_max: p * 10,
            awareness_max: 8,
            placement: None,
            placement_debounce: p / 10,
            leave_linger: p,
            event_capacity: 65_536,
            verify_source: true,
            crdt_neighbours: 3,
            crdt_buffer_cap: 4096,
            crdt_round_interval: p / round_div,
            crdt_sync_interval: p * 15,
        }
    }

    /// The same configuration with another id.
    pub fn with_id(mut self, id: NodeId) -> Self {
        self.id = id;
        self
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_string(),
            })
        };
        FrameConfig::new(&self.cluster)
            .and_then(|c| c.with_max_datagram(self.max_datagram))
            .map_err(ConfigError::Frame)?;
        if self.max_datagram < MIN_NODE_DATAGRAM {
            return bad(
                "max_datagram",
                "must be at least 1280 bytes, so that a member update with the largest metadata fits one datagram",
            );
        }
        if self.metadata.len() > MAX_METADATA_LEN {
            return bad("metadata", "longer than MAX_METADATA_LEN");
        }
        for (field, d) in [
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("gossip_interval", self.gossip_interval),
            ("input_lag_limit", self.input_lag_limit),
            ("push_pull_interval", self.push_pull_interval),
            ("dead_gossip_interval", self.dead_gossip_interval),
            ("join_retry", self.join_retry),
            ("crdt_round_interval", self.crdt_round_interval),
            ("crdt_sync_interval", self.crdt_sync_interval),
        ] {
            if d.is_zero() {
                return bad(field, "must be positive");
            }
        }
        if self.probe_timeout >= self.probe_interval {
            return bad("probe_timeout", "must be shorter than probe_interval");
        }
        if self.join_retry_max < self.join_retry {
            return bad("join_retry_max", "must be at least join_retry");
        }
        if self.suspicion_mult == 0 || self.suspicion_max_mult == 0 {
            return bad("suspicion_mult", "multipliers must be at least 1");
        }
        if self.retransmit_mult == 0 {
            return bad("retransmit_mult", "must be at least 1");
        }
        if self.broadcast_depth == 0 {
            return bad("broadcast_depth", "must be at least 1");
        }
        if self.crdt_neighbours == 0 {
            return bad("crdt_neighbours", "must be at least 1");
        }
        if self.crdt_buffer_cap == 0 {
            return bad("crdt_buffer_cap", "must be at least 1");
        }
        if self.gossip_fanout == 0 {
            return bad("gossip_fanout", "must be at least 1");
        }
        if self.awareness_max > 64 {
            return bad("awareness_max", "must be at most 64");
        }
        if self.tombstone_ttl < self.probe_interval * 2 {
            return bad("tombstone_ttl", "must be at least two probe intervals");
        }
        Ok(())
    }
}

/// A [`NodeConfig`] that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field is out of range; nothing was started.
    #[error("invalid node config `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The cluster label or datagram size is out of the codec's range.
    #[error("invalid node config: {0}")]
    Frame(#[source] crate::codec::ConfigError),
    /// The initial placement could not be built.
    #[error("invalid node config `placement`: {0}")]
    Placement(#[source] crate::placement::PlacementError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_scale() {
        let addr: SocketAddr = "127.0.0.1:7946".parse().unwrap();
        for p in [Preset::Lan, Preset::Wan, Preset::Local] {
            NodeConfig::new(p, addr, b"c").validate().unwrap();
        }
        let lan = NodeConfig::new(Preset::Lan, addr, b"c");
        let local = NodeConfig::new(Preset::Local, addr, b"c");
        assert_eq!(lan.probe_interval, local.probe_interval * 5);
        assert_eq!(lan.push_pull_interval, local.push_pull_interval * 5);
        assert_eq!(lan.gossip_interval, local.gossip_interval * 5);
        assert_eq!(lan.crdt_round_interval, local.crdt_round_interval * 5);
        // The id is a function of the address.
        assert_eq!(lan.id, local.id);
    }

    #[test]
    fn bad_fields_are_named() {
        let addr: SocketAddr = "127.0.0.1:7946".parse().unwrap();
        let mut c = NodeConfig::new(Preset::Lan, addr, b"c");
        c.probe_timeout = c.probe_interval;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("probe_timeout"), "{e}");
        let mut c = NodeConfig::new(Preset::Lan, addr, b"c");
        c.max_datagram = 10;
        assert!(c.validate().is_err());
        let mut c = NodeConfig::new(Preset::Lan, addr, b"c");
        c.crdt_round_interval = Duration::ZERO;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("crdt_round_interval"), "{e}");
        let mut c = NodeConfig::new(Preset::Lan, addr, &[b'x'; 65]);
        c.gossip_fanout = 1;
        assert!(c.validate().is_err());
    }
}
