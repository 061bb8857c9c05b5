//! `/metrics`: the node's and the runtime's counters in the Prometheus text exposition
//! format, version 0.0.4.
//!
//! [`collect`] reads everything in one pass (one query on the node's shard, lock-free
//! snapshots for the rest); [`render`] is a pure function of that snapshot.

use std::fmt::{Display, Write as _};

use hearsay::codec::Status;
use hearsay::engine::{Engine, EngineError};
use hearsay::node::NodeStats;
use hearsay::runtime::{BackendInfo, BackendKind, Stats};

/// The content type of the exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the node reports about itself, read on its shard.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeView {
    pub(crate) stats: NodeStats,
    pub(crate) id: String,
    pub(crate) addr: String,
    pub(crate) cluster: String,
    pub(crate) incarnation: u64,
    pub(crate) joined: bool,
    pub(crate) drained: bool,
    pub(crate) local_health: u32,
    pub(crate) pending_broadcasts: usize,
    pub(crate) suspicions: usize,
    pub(crate) crdt_keys: usize,
    pub(crate) crdt_buffered: usize,
    pub(crate) scheme: String,
}

/// Everything `/metrics` shows.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub(crate) node: NodeView,
    /// Members by status (alive, suspect, dead, left), tombstones included.
    pub(crate) members: [usize; 4],
    /// Live members that are drained.
    pub(crate) drained: usize,
    pub(crate) placement_version: u64,
    pub(crate) placement_members: usize,
    pub(crate) backend: BackendInfo,
    pub(crate) shards: Vec<Stats>,
    /// Events the event log could not keep up with.
    pub(crate) event_log_lagged: Option<u64>,
}

/// Read the node, the member list, placement and the runtime.
pub(crate) fn collect(
    engine: &Engine,
    event_log_lagged: Option<u64>,
) -> Result<Snapshot, EngineError> {
    let node = engine.inspect(|n| {
        let local = n.local();
        NodeView {
            stats: n.stats().clone(),
            id: n.id().to_string(),
            addr: n.addr().to_string(),
            cluster: String::from_utf8_lossy(&n.config().cluster).into_owned(),
            incarnation: local.incarnation,
            joined: n.is_joined(),
            drained: local.drained,
            local_health: n.local_health(),
            pending_broadcasts: n.pending_broadcasts(),
            suspicions: n.suspicions().count(),
            crdt_keys: n.crdt_store().len(),
            crdt_buffered: n.crdt_store().buffered(),
            scheme: n
                .config()
                .placement
                .map(|p| p.scheme.to_string())
                .unwrap_or_default(),
        }
    })?;
    let mut members = [0usize; 4];
    let mut drained = 0;
    for m in engine.members().iter() {
        members[m.status as usize] += 1;
        drained += usize::from(m.is_live() && m.drained);
    }
    let snap = engine.router().load();
    Ok(Snapshot {
        node,
        members,
        drained,
        placement_version: snap.version(),
        placement_members: snap.nodes().len(),
        backend: engine.backend()?,
        shards: engine.shard_stats()?,
        event_log_lagged,
    })
}

/// The exposition text: families in a fixed order, each with `# HELP` and `# TYPE`.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    let st = &s.node.stats;

    o.family(
        "hearsay_build_info",
        "gauge",
        "Version and build of the running agent (always 1).",
    );
    o.sample(
        "hearsay_build_info",
        &[
            ("version", hearsay::build::VERSION),
            ("commit", hearsay::build::GIT_COMMIT),
            ("build_date", hearsay::build::BUILD_DATE),
            ("target", hearsay::build::TARGET),
            ("profile", hearsay::build::PROFILE),
            ("rustc", hearsay::build::RUSTC),
        ],
        1,
    );
    o.family(
        "hearsay_node_info",
        "gauge",
        "This node's identity (always 1).",
    );
    o.sample(
        "hearsay_node_info",
        &[
            ("id", &s.node.id),
            ("addr", &s.node.addr),
            ("cluster", &s.node.cluster),
        ],
        1,
    );
    let backend = match s.backend.kind {
        BackendKind::IoUring => "io_uring",
        BackendKind::Portable => "portable",
        BackendKind::Memory => "memory",
    };
    o.family(
        "hearsay_runtime_backend_info",
        "gauge",
        "The UDP runtime backend in use (always 1); fallback=\"true\" when io_uring was wanted but unavailable.",
    );
    o.sample(
        "hearsay_runtime_backend_info",
        &[
            ("backend", backend),
            (
                "fallback",
                if s.backend.fallback_reason.is_some() {
                    "true"
                } else {
                    "false"
                },
            ),
        ],
        1,
    );

    o.gauge(
        "hearsay_joined",
        "1 once the node reached a cluster.",
        u8::from(s.node.joined),
    );
    o.gauge(
        "hearsay_drained",
        "1 while this node is drained (out of placement, still a member).",
        u8::from(s.node.drained),
    );
    o.gauge(
        "hearsay_incarnation",
        "This node's incarnation.",
        s.node.incarnation,
    );
    o.gauge(
        "hearsay_local_health",
        "Lifeguard local health score (0 is healthy).",
        s.node.local_health,
    );

    // Traffic.
    o.counter(
        "hearsay_datagrams_received_total",
        "Datagrams handed to the node.",
        st.datagrams_in,
    );
    o.counter(
        "hearsay_datagrams_sent_total",
        "Datagrams the node produced.",
        st.datagrams_out,
    );
    o.counter(
        "hearsay_bytes_received_total",
        "Bytes of the datagrams handed to the node.",
        st.bytes_in,
    );
    o.counter(
        "hearsay_bytes_sent_total",
        "Bytes of the datagrams the node produced.",
        st.bytes_out,
    );
    for (name, help, counts, bytes) in [
        (
            "hearsay_messages_received_total",
            "Messages read from good frames, by message type.",
            &st.messages_in,
            false,
        ),
        (
            "hearsay_messages_sent_total",
            "Messages written, by message type.",
            &st.messages_out,
            false,
        ),
        (
            "hearsay_message_bytes_received_total",
            "Bytes of the messages read, by message type (frame headers excluded).",
            &st.messages_in,
            true,
        ),
        (
            "hearsay_message_bytes_sent_total",
            "Bytes of the messages written, by message type (frame headers excluded).",
            &st.messages_out,
            true,
        ),
    ] {
        o.family(name, "counter", help);
        for (ty, n, b) in counts.iter() {
            o.sample(name, &[("type", ty)], if bytes { b } else { n });
        }
    }
    o.family(
        "hearsay_bad_packets_total",
        "counter",
        "Frames dropped, by reason: decoder errors, a known member speaking from another address (source_mismatch), frames claiming to come from this node (from_self).",
    );
    o.sample(
        "hearsay_bad_packets_total",
        &[("reason", "source_mismatch")],
        st.source_mismatch,
    );
    o.sample(
        "hearsay_bad_packets_total",
        &[("reason", "from_self")],
        st.from_self,
    );
    for (reason, n) in &st.dropped {
        o.sample("hearsay_bad_packets_total", &[("reason", reason)], n);
    }
    o.counter(
        "hearsay_unhandled_messages_total",
        "Messages of types this version skips or membership does not handle.",
        st.unhandled_messages,
    );
    o.counter(
        "hearsay_misdirected_pings_total",
        "Pings meant for another identity at this address.",
        st.misdirected_pings,
    );

    // Failure detection.
    o.counter("hearsay_probes_total", "Direct probes sent.", st.probes);
    o.counter(
        "hearsay_probe_failures_total",
        "Probes that got no ack, directly or indirectly.",
        st.probe_failures,
    );
    o.counter(
        "hearsay_slow_acks_total",
        "Probes answered after more than half the probe timeout.",
        st.slow_acks,
    );
    o.counter(
        "hearsay_indirect_probes_total",
        "Indirect probe requests sent.",
        st.indirect_probes,
    );
    o.counter(
        "hearsay_direct_retries_total",
        "Second direct pings sent alongside indirect probes.",
        st.direct_retries,
    );
    o.counter(
        "hearsay_probe_stalls_total",
        "Probes abandoned because this node missed its own deadline.",
        st.stalls,
    );
    o.gauge(
        "hearsay_input_lag_peak_seconds",
        "Longest a datagram waited in this node's socket before it was read.",
        st.input_lag_peak_us as f64 / 1e6,
    );
    o.counter(
        "hearsay_probes_unjudged_total",
        "Probes left unjudged because this node read its input late.",
        st.probes_unjudged,
    );
    o.counter(
        "hearsay_gossip_deferred_total",
        "Gossip rounds deferred because this node read its input late.",
        st.gossip_deferred,
    );
    o.counter(
        "hearsay_push_pulls_deferred_total",
        "Push-pull rounds deferred because this node read its input late.",
        st.push_pulls_deferred,
    );
    o.counter(
        "hearsay_suspicions_extended_total",
        "Suspicion timeouts extended because this node read its input late.",
        st.suspicions_extended,
    );
    o.counter(
        "hearsay_suspicions_total",
        "Suspicions this node raised.",
        st.suspicions,
    );
    o.counter(
        "hearsay_declared_dead_total",
        "Members this node declared failed.",
        st.declared_dead,
    );
    o.counter(
        "hearsay_refutations_total",
        "Times this node refuted a rumour about itself.",
        st.refutations,
    );
    o.gauge(
        "hearsay_suspicions_active",
        "Members this node suspects now.",
        s.node.suspicions,
    );

    // Membership and dissemination.
    o.family(
        "hearsay_members",
        "gauge",
        "Members this node knows, by status (dead and left are tombstones).",
    );
    for (i, name) in ["alive", "suspect", "dead", "left"].into_iter().enumerate() {
        debug_assert_eq!(
            i,
            [Status::Alive, Status::Suspect, Status::Dead, Status::Left][i] as usize
        );
        o.sample("hearsay_members", &[("state", name)], s.members[i]);
    }
    o.gauge(
        "hearsay_members_drained",
        "Live members that are drained.",
        s.drained,
    );
    o.counter(
        "hearsay_member_updates_merged_total",
        "Member updates merged that changed something.",
        st.updates_merged,
    );
    o.family(
        "hearsay_member_updates_sent_total",
        "counter",
        "Member updates written, by what carried them.",
    );
    let sent = &st.updates_sent;
    for (carrier, n) in [
        ("gossip", sent.gossip),
        ("piggyback", sent.piggyback),
        ("pull", sent.pull),
        ("catch_up", sent.catch_up),
    ] {
        o.sample(
            "hearsay_member_updates_sent_total",
            &[("carrier", carrier)],
            n,
        );
    }
    o.counter(
        "hearsay_corrections_total",
        "Stale updates answered with this node's newer state.",
        st.corrections,
    );
    o.counter(
        "hearsay_broadcasts_heard_total",
        "Queued updates received again from others while the queue was crowded, each counted as one sending.",
        st.broadcasts_heard,
    );
    o.counter(
        "hearsay_push_pulls_total",
        "Push-pull anti-entropy rounds started.",
        st.push_pulls,
    );
    o.counter(
        "hearsay_join_attempts_total",
        "Join attempts sent (one per seed per attempt).",
        st.join_attempts,
    );
    o.gauge(
        "hearsay_pending_broadcasts",
        "Member updates waiting to be piggybacked.",
        s.node.pending_broadcasts,
    );
    o.counter(
        "hearsay_events_dropped_total",
        "Node events dropped because its event queue was full.",
        st.events_dropped,
    );
    o.counter(
        "hearsay_refused_commands_total",
        "Commands refused (invalid metadata, commands after leaving).",
        st.refused_commands,
    );

    // Placement.
    o.family(
        "hearsay_placement_info",
        "gauge",
        "The placement scheme (always 1).",
    );
    o.sample("hearsay_placement_info", &[("scheme", &s.node.scheme)], 1);
    o.gauge(
        "hearsay_placement_version",
        "Version of the published placement (ring).",
        s.placement_version,
    );
    o.gauge(
        "hearsay_placement_members",
        "Members in the published placement.",
        s.placement_members,
    );
    o.counter(
        "hearsay_placement_builds_total",
        "Placement rebuilds.",
        st.placement_builds,
    );
    o.counter(
        "hearsay_placement_errors_total",
        "Placement rebuilds that failed (the previous placement stays).",
        st.placement_errors,
    );

    // CRDTs.
    o.gauge("hearsay_crdt_keys", "CRDT keys held.", s.node.crdt_keys);
    o.gauge(
        "hearsay_crdt_buffered_deltas",
        "CRDT deltas buffered for neighbours.",
        s.node.crdt_buffered,
    );
    o.counter(
        "hearsay_crdt_updates_total",
        "Local CRDT mutations applied.",
        st.crdt_updates,
    );
    o.counter(
        "hearsay_crdt_deltas_received_total",
        "Remote CRDT deltas and states joined.",
        st.crdt_deltas_in,
    );
    o.counter(
        "hearsay_crdt_changes_total",
        "Remote deltas and states that changed a local value.",
        st.crdt_changes,
    );
    o.counter(
        "hearsay_crdt_rejected_total",
        "CRDT mutations and remote values refused.",
        st.crdt_rejected,
    );
    o.counter(
        "hearsay_crdt_syncs_total",
        "CRDT anti-entropy rounds started.",
        st.crdt_syncs,
    );

    // Runtime, per shard.
    type Field = fn(&Stats) -> u64;
    let runtime: [(&str, &str, &str, Field); 16] = [
        (
            "hearsay_runtime_datagrams_received_total",
            "counter",
            "Datagrams the shard handed to endpoints.",
            |x| x.datagrams_in,
        ),
        (
            "hearsay_runtime_datagrams_sent_total",
            "counter",
            "Datagrams the kernel accepted for sending.",
            |x| x.datagrams_out,
        ),
        (
            "hearsay_runtime_bytes_received_total",
            "counter",
            "Payload bytes handed to endpoints.",
            |x| x.bytes_in,
        ),
        (
            "hearsay_runtime_bytes_sent_total",
            "counter",
            "Payload bytes sent.",
            |x| x.bytes_out,
        ),
        (
            "hearsay_runtime_truncated_total",
            "counter",
            "Incoming datagrams over the maximum size, dropped.",
            |x| x.truncated,
        ),
        (
            "hearsay_runtime_send_errors_total",
            "counter",
            "Sends that failed.",
            |x| x.send_errors,
        ),
        (
            "hearsay_runtime_send_queue_full_total",
            "counter",
            "Datagrams dropped because a socket's send queue was full.",
            |x| x.send_queue_full,
        ),
        (
            "hearsay_runtime_recv_errors_total",
            "counter",
            "Receive errors.",
            |x| x.recv_errors,
        ),
        (
            "hearsay_runtime_recv_buffers_exhausted_total",
            "counter",
            "io_uring multishot receives stopped for want of buffers.",
            |x| x.recv_buffers_exhausted,
        ),
        (
            "hearsay_runtime_panics_total",
            "counter",
            "Endpoint callbacks that panicked.",
            |x| x.panics,
        ),
        (
            "hearsay_runtime_timeouts_total",
            "counter",
            "Timer expiries delivered to endpoints.",
            |x| x.timeouts,
        ),
        (
            "hearsay_runtime_commands_total",
            "counter",
            "Commands delivered to endpoints.",
            |x| x.commands,
        ),
        (
            "hearsay_runtime_commands_dropped_total",
            "counter",
            "Commands for endpoints that no longer exist.",
            |x| x.commands_dropped,
        ),
        (
            "hearsay_runtime_queue_depth",
            "gauge",
            "Messages waiting in the shard's command queue.",
            |x| x.queue_depth,
        ),
        (
            "hearsay_runtime_endpoints",
            "gauge",
            "Endpoints the shard hosts.",
            |x| x.endpoints,
        ),
        (
            "hearsay_runtime_recv_queue_full_total",
            "counter",
            "Memory backend: datagrams dropped at a full destination queue.",
            |x| x.recv_queue_full,
        ),
    ];
    for (name, kind, help, field) in runtime {
        o.family(name, kind, help);
        for (i, shard) in s.shards.iter().enumerate() {
            o.sample(name, &[("shard", &i.to_string())], field(shard));
        }
    }
    if let Some(lagged) = s.event_log_lagged {
        o.counter(
            "hearsay_event_log_lagged_total",
            "Events the event log missed because it fell behind.",
            lagged,
        );
    }
    o.0
}

/// The text being built.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

/// HELP text: backslash and newline escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values: backslash, double quote and newline escaped.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn snapshot() -> Snapshot {
        let mut stats = NodeStats {
            datagrams_in: 10,
            probes: 7,
            suspicions: 2,
            refutations: 1,
            crdt_deltas_in: 4,
            updates_sent: hearsay::node::UpdatesSent {
                pull: 6,
                catch_up: 40,
                ..Default::default()
            },
            ..NodeStats::default()
        };
        stats.dropped.push(("bad_magic", 3));
        let mut shard = Stats::default();
        shard.queue_depth = 5;
        shard.datagrams_in = 10;
        Snapshot {
            node: NodeView {
                stats,
                id: "00000000000000ff".into(),
                addr: "127.0.0.1:7946".into(),
                cluster: "we\"ird\\label\nx".into(),
                incarnation: 3,
                joined: true,
                drained: false,
                crdt_keys: 12,
                scheme: "ring:160".into(),
                ..NodeView::default()
            },
            members: [3, 1, 1, 0],
            drained: 1,
            placement_version: 9,
            placement_members: 3,
            backend: BackendInfo {
                kind: BackendKind::Portable,
                fallback_reason: Some("blocked by seccomp".into()),
            },
            shards: vec![shard, Stats::default()],
            event_log_lagged: None,
        }
    }

    fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
            })
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn the_text_parses_and_carries_the_values() {
        let text = render(&snapshot());
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        assert_eq!(value(&scrape, "hearsay_probes_total", &[]), 7.0);
        assert_eq!(value(&scrape, "hearsay_suspicions_total", &[]), 2.0);
        assert_eq!(value(&scrape, "hearsay_refutations_total", &[]), 1.0);
        assert_eq!(
            value(&scrape, "hearsay_members", &[("state", "alive")]),
            3.0
        );
        assert_eq!(value(&scrape, "hearsay_members", &[("state", "dead")]), 1.0);
        for (carrier, n) in [("gossip", 0.0), ("pull", 6.0), ("catch_up", 40.0)] {
            let labels = [("carrier", carrier)];
            assert_eq!(
                value(&scrape, "hearsay_member_updates_sent_total", &labels),
                n
            );
        }
        assert_eq!(
            value(
                &scrape,
                "hearsay_bad_packets_total",
                &[("reason", "bad_magic")]
            ),
            3.0
        );
        assert_eq!(
            value(&scrape, "hearsay_runtime_queue_depth", &[("shard", "0")]),
            5.0
        );
        assert_eq!(
            value(&scrape, "hearsay_runtime_queue_depth", &[("shard", "1")]),
            0.0
        );
        assert_eq!(value(&scrape, "hearsay_placement_version", &[]), 9.0);
        assert_eq!(value(&scrape, "hearsay_crdt_keys", &[]), 12.0);
        assert_eq!(
            value(
                &scrape,
                "hearsay_runtime_backend_info",
                &[("backend", "portable"), ("fallback", "true")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &scrape,
                "hearsay_build_info",
                &[("version", hearsay::build::VERSION)]
            ),
            1.0
        );
        assert_eq!(
            value(
                &scrape,
                "hearsay_messages_received_total",
                &[("type", "ping")]
            ),
            0.0
        );
        // Every message type has a sample, including unknown ones.
        let types: HashSet<&str> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == "hearsay_messages_sent_total")
            .map(|s| s.labels.get("type").unwrap())
            .collect();
        assert_eq!(types.len(), 16);
        assert!(types.contains("crdt_delta") && types.contains("unknown"));
        // Every sample's family has help text.
        for s in &scrape.samples {
            assert!(
                scrape.docs.contains_key(&s.metric),
                "{} has no HELP",
                s.metric
            );
        }
    }

    #[test]
    fn families_are_declared_once_with_help_then_type() {
        let text = render(&snapshot());
        let mut seen = HashSet::new();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(seen.insert(name.to_string()), "{name} declared twice");
                let ty = lines[i + 1];
                assert!(ty.starts_with(&format!("# TYPE {name} ")), "{ty}");
                let kind = ty.rsplit(' ').next().unwrap();
                assert!(kind == "counter" || kind == "gauge", "{ty}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            } else if !l.starts_with('#') {
                // A sample belongs to the family declared last.
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(seen.contains(name), "{l}");
                assert!(l.rsplit(' ').next().unwrap().parse::<f64>().is_ok(), "{l}");
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(&snapshot());
        let info = text
            .lines()
            .find(|l| l.starts_with("hearsay_node_info{"))
            .unwrap();
        assert!(info.contains(r#"cluster="we\"ird\\label\nx""#), "{info}");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }
}
