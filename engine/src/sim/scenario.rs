//! Scenarios as data: a list of [`Op`]s that tests and the load generator share.

use std::net::SocketAddr;
use std::time::Duration;

use super::{LinkConfig, Sim, SimError};
use crate::runtime::Endpoint;

/// One step of a scenario; `C` is the endpoint's command type.
///
/// Everything but [`Op::Wait`] happens at the current virtual instant; waits are the only
/// way a scenario lets time pass. A scenario cannot wait for a condition: run
/// [`Sim::run_until`] between two scenarios for that.
#[derive(Debug, Clone, PartialEq)]
pub enum Op<C> {
    /// Adds `count` nodes, each built by the scenario's factory.
    AddNodes {
        /// How many nodes to add.
        count: usize,
    },
    /// [`Sim::kill`] this node.
    Kill(usize),
    /// [`Sim::restart`] this node with an endpoint from the scenario's factory.
    Restart(usize),
    /// [`Sim::pause`] a node.
    Pause {
        /// The node.
        node: usize,
        /// How long it stays paused.
        for_: Duration,
    },
    /// [`Sim::partition`] the network into these groups.
    Partition(Vec<Vec<usize>>),
    /// [`Sim::heal`] the partition.
    Heal,
    /// [`Sim::set_default_link`].
    SetDefaultLink(LinkConfig),
    /// [`Sim::set_link`] for the directed link `from → to`.
    SetLink {
        /// The sending node.
        from: usize,
        /// The receiving node.
        to: usize,
        /// Its condition.
        link: LinkConfig,
    },
    /// [`Sim::clear_link`] for the directed link `from → to`.
    ClearLink {
        /// The sending node.
        from: usize,
        /// The receiving node.
        to: usize,
    },
    /// [`Sim::set_node_link`]: the condition of every link touching `node`.
    SetNodeLink {
        /// The node.
        node: usize,
        /// Its condition.
        link: LinkConfig,
    },
    /// [`Sim::clear_node_link`].
    ClearNodeLink(usize),
    /// [`Sim::command`] a node.
    Command {
        /// The node.
        node: usize,
        /// The command.
        cmd: C,
    },
    /// [`Sim::run_for`] this long.
    Wait(Duration),
}

impl<E: Endpoint> Sim<E> {
    /// Applies `ops` in order. `factory` builds the endpoint of node `index` at `addr`, for
    /// [`Op::AddNodes`] and [`Op::Restart`]. Stops at the first failing op and reports its
    /// position in [`SimError::Scenario`].
    pub fn run_scenario<F>(
        &mut self,
        ops: impl IntoIterator<Item = Op<E::Command>>,
        mut factory: F,
    ) -> Result<(), SimError>
    where
        F: FnMut(usize, SocketAddr) -> E,
    {
        for (n, op) in ops.into_iter().enumerate() {
            self.apply(op, &mut factory)
                .map_err(|e| SimError::Scenario {
                    op: n,
                    source: Box::new(e),
                })?;
        }
        Ok(())
    }

    /// Applies one op, as [`run_scenario`](Self::run_scenario) does.
    pub fn apply<F>(&mut self, op: Op<E::Command>, factory: &mut F) -> Result<(), SimError>
    where
        F: FnMut(usize, SocketAddr) -> E,
    {
        match op {
            Op::AddNodes { count } => {
                for _ in 0..count {
                    let index = self.len();
                    self.add_node(|addr| factory(index, addr));
                }
                Ok(())
            }
            Op::Kill(node) => self.kill(node),
            Op::Restart(node) => self.restart(node, |addr| factory(node, addr)),
            Op::Pause { node, for_ } => self.pause(node, for_),
            Op::Partition(groups) => self.partition(&groups),
            Op::Heal => {
                self.heal();
                Ok(())
            }
            Op::SetDefaultLink(link) => self.set_default_link(link),
            Op::SetLink { from, to, link } => self.set_link(from, to, link),
            Op::ClearLink { from, to } => self.clear_link(from, to),
            Op::SetNodeLink { node, link } => self.set_node_link(node, link),
            Op::ClearNodeLink(node) => self.clear_node_link(node),
            Op::Command { node, cmd } => self.command(node, cmd),
            Op::Wait(duration) => {
                self.run_for(duration);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::probe::{Cmd, Probe};
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn addr(i: usize) -> SocketAddr {
        Sim::<Probe>::with_seed(0).net.addr_of(i)
    }

    fn factory(_index: usize, addr: SocketAddr) -> Probe {
        Probe::new(addr)
    }

    #[test]
    fn scenario_runs_ops_in_order() {
        let mut sim = Sim::with_seed(5);
        let burst = |to: usize| Cmd::Burst {
            to: addr(to),
            count: 1,
            size: 10,
        };
        let ops = vec![
            Op::AddNodes { count: 4 },
            Op::Partition(vec![vec![0, 1], vec![2, 3]]),
            Op::Command {
                node: 0,
                cmd: burst(1),
            },
            Op::Command {
                node: 0,
                cmd: burst(2),
            },
            Op::Wait(10 * MS),
            Op::Heal,
            Op::Kill(3),
            Op::Command {
                node: 0,
                cmd: burst(2),
            },
            Op::Command {
                node: 0,
                cmd: burst(3),
            },
            Op::Wait(10 * MS),
            Op::Restart(3),
            Op::Command {
                node: 0,
                cmd: burst(3),
            },
            Op::Wait(10 * MS),
        ];
        sim.run_scenario(ops, factory).unwrap();
        assert_eq!(sim.len(), 4);
        assert_eq!(sim.elapsed(), 30 * MS);
        assert_eq!(sim.node(1).unwrap().got.len(), 1);
        // The first datagram to 2 was cut by the partition, the second got through.
        assert_eq!(sim.node(2).unwrap().got.len(), 1);
        assert_eq!(sim.node(2).unwrap().got[0].at, sim.epoch() + 11 * MS);
        // The restarted 3 is a fresh endpoint that saw only the last datagram.
        assert_eq!(sim.node(3).unwrap().got.len(), 1);
        let s = sim.stats();
        assert_eq!((s.sent, s.received), (5, 3));
        assert_eq!((s.dropped_partition, s.dropped_dead), (1, 1));
    }

    #[test]
    fn scenario_reports_the_failing_op() {
        let mut sim = Sim::with_seed(5);
        let ops = vec![
            Op::AddNodes { count: 2 },
            Op::Wait(MS),
            Op::Kill(7),
            Op::AddNodes { count: 1 },
        ];
        let err = sim.run_scenario(ops, factory).unwrap_err();
        assert_eq!(
            err,
            SimError::Scenario {
                op: 2,
                source: Box::new(SimError::UnknownNode(7)),
            }
        );
        // The ops before the failure were applied, the one after was not.
        assert_eq!(sim.len(), 2);
        assert_eq!(sim.elapsed(), MS);
    }

    #[test]
    fn scenario_sets_links_and_pauses() {
        let mut sim = Sim::with_seed(9);
        let lossy = LinkConfig::default().with_loss(1.0);
        let ops = vec![
            Op::AddNodes { count: 3 },
            Op::SetNodeLink {
                node: 2,
                link: lossy,
            },
            Op::SetLink {
                from: 0,
                to: 1,
                link: LinkConfig::new(super::super::Latency::Constant(7 * MS)),
            },
            Op::Pause {
                node: 1,
                for_: 3 * MS,
            },
            Op::Command {
                node: 0,
                cmd: Cmd::Burst {
                    to: addr(1),
                    count: 1,
                    size: 5,
                },
            },
            Op::Command {
                node: 0,
                cmd: Cmd::Burst {
                    to: addr(2),
                    count: 1,
                    size: 5,
                },
            },
            Op::Wait(20 * MS),
            Op::ClearNodeLink(2),
            Op::ClearLink { from: 0, to: 1 },
            Op::Command {
                node: 0,
                cmd: Cmd::Burst {
                    to: addr(2),
                    count: 1,
                    size: 5,
                },
            },
            Op::Wait(20 * MS),
        ];
        sim.run_scenario(ops, factory).unwrap();
        // The pause ended before the 7 ms override delivered.
        assert_eq!(sim.node(1).unwrap().got[0].at, sim.epoch() + 7 * MS);
        assert_eq!(sim.stats().lost, 1);
        assert_eq!(sim.node(2).unwrap().got.len(), 1);
        assert_eq!(sim.node(2).unwrap().got[0].at, sim.epoch() + 21 * MS);
    }
}
