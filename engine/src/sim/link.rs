//! The conditions of a directed link and how each datagram's fate is drawn from them.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;

use super::SimError;

/// How long a datagram spends on a link.
///
/// Every sample lies within [`bounds`](Self::bounds), so tests can assert delivery
/// windows even for the long-tailed distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Every datagram takes exactly this long; datagrams on one link stay in order.
    Constant(Duration),
    /// Uniform over `min..=max` (nanosecond resolution). Jitter wider than the gap
    /// between two sends reorders them.
    Uniform {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// A propagation floor plus a log-normal queueing delay: `min + (median - min) ·
    /// e^(sigma·Z)` with `Z` standard normal, capped at `max`. Half the samples fall below
    /// `median`; `sigma` sets how heavy the tail is (0.5 mild, 1.0 or more heavy).
    LogNormal {
        /// The floor no datagram beats.
        min: Duration,
        /// The median delay.
        median: Duration,
        /// The standard deviation of the underlying normal; 0 makes every delay `median`.
        sigma: f64,
        /// The cap: the tail is cut here so a run stays bounded.
        max: Duration,
    },
}

impl Latency {
    /// The smallest and largest delay this distribution can produce.
    pub fn bounds(&self) -> (Duration, Duration) {
        match *self {
            Latency::Constant(d) => (d, d),
            Latency::Uniform { min, max } => (min, max),
            Latency::LogNormal { min, max, .. } => (min, max),
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        let invalid = |reason: String| {
            Err(SimError::InvalidLink {
                field: "latency",
                reason,
            })
        };
        match *self {
            Latency::Constant(_) => Ok(()),
            Latency::Uniform { min, max } if min > max => {
                invalid(format!("uniform min {min:?} exceeds max {max:?}"))
            }
            Latency::Uniform { .. } => Ok(()),
            Latency::LogNormal {
                min,
                median,
                sigma,
                max,
            } => {
                if !(min <= median && median <= max) {
                    invalid(format!(
                        "log-normal needs min <= median <= max, got {min:?}, {median:?}, {max:?}"
                    ))
                } else if !(sigma.is_finite() && sigma >= 0.0) {
                    invalid(format!(
                        "log-normal sigma {sigma} is not a finite value >= 0"
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Draws one delay, in nanoseconds.
    pub(super) fn sample(&self, rng: &mut SmallRng) -> u64 {
        match *self {
            Latency::Constant(d) => nanos(d),
            Latency::Uniform { min, max } => rng.random_range(nanos(min)..=nanos(max)),
            Latency::LogNormal {
                min,
                median,
                sigma,
                max,
            } => {
                let (lo, hi) = (nanos(min), nanos(max));
                let spread = (nanos(median) - lo) as f64;
                let delay = lo as f64 + spread * (sigma * standard_normal(rng)).exp();
                // `as` saturates, and NaN cannot occur: spread and sigma are finite.
                (delay as u64).clamp(lo, hi)
            }
        }
    }
}

/// One standard normal sample by Box–Muller. The second value of the pair is discarded:
/// keeping it would make a sample depend on whether the previous call left one behind,
/// and the cost of a second `ln`/`cos` is nothing next to a heap operation.
fn standard_normal(rng: &mut SmallRng) -> f64 {
    // `random::<f64>()` is in [0, 1); flipping it keeps `ln` away from 0.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A duration in nanoseconds, saturating at `u64::MAX` (584 years).
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The conditions of one directed link (or of every link, as the default).
///
/// The fate of a datagram is drawn in this order: partition (see
/// [`Sim::partition`](super::Sim::partition)), `loss`, `duplicate`, then for each copy a
/// `latency` sample plus `reorder_delay` with probability `reorder`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Probability in `0..=1` that a datagram is lost.
    pub loss: f64,
    /// The delay distribution.
    pub latency: Latency,
    /// Probability in `0..=1` that a datagram that was not lost arrives twice; the two
    /// copies draw their latencies independently.
    pub duplicate: f64,
    /// Probability in `0..=1` that a copy is held back by an extra `reorder_delay`, so
    /// that datagrams sent after it overtake it even on a constant-latency link.
    pub reorder: f64,
    /// The extra delay of a reordered copy.
    pub reorder_delay: Duration,
}

impl Default for LinkConfig {
    /// A perfect link with a constant 1 ms latency.
    fn default() -> Self {
        LinkConfig::new(Latency::Constant(Duration::from_millis(1)))
    }
}

impl LinkConfig {
    /// A link that loses, duplicates and reorders nothing, with the given latency.
    pub const fn new(latency: Latency) -> Self {
        LinkConfig {
            loss: 0.0,
            latency,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
        }
    }

    /// This link with loss probability `p`.
    pub const fn with_loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// This link with duplication probability `p`.
    pub const fn with_duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// This link holding back a copy by `delay` with probability `p`.
    pub const fn with_reorder(mut self, p: f64, delay: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = delay;
        self
    }

    /// Checks that the probabilities are in `0..=1` and the latency is well formed.
    pub fn validate(&self) -> Result<(), SimError> {
        for (field, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(SimError::InvalidLink {
                    field,
                    reason: format!("probability {p} is not in 0..=1"),
                });
            }
        }
        self.latency.validate()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn samples_stay_within_bounds() {
        let mut rng = SmallRng::seed_from_u64(7);
        for latency in [
            Latency::Constant(3 * MS),
            Latency::Uniform {
                min: 2 * MS,
                max: 9 * MS,
            },
            Latency::LogNormal {
                min: MS,
                median: 4 * MS,
                sigma: 1.5,
                max: 40 * MS,
            },
        ] {
            let (lo, hi) = latency.bounds();
            for _ in 0..20_000 {
                let d = Duration::from_nanos(latency.sample(&mut rng));
                assert!(lo <= d && d <= hi, "{latency:?} gave {d:?}");
            }
        }
    }

    #[test]
    fn log_normal_has_its_median_and_a_tail() {
        let mut rng = SmallRng::seed_from_u64(11);
        let latency = Latency::LogNormal {
            min: MS,
            median: 5 * MS,
            sigma: 1.0,
            max: Duration::from_secs(10),
        };
        let mut samples: Vec<u64> = (0..20_001).map(|_| latency.sample(&mut rng)).collect();
        samples.sort_unstable();
        let median = Duration::from_nanos(samples[samples.len() / 2]);
        assert!(
            (4_800_000..5_200_000).contains(&median.as_nanos()),
            "median {median:?}"
        );
        // With sigma 1, the 99th percentile of the extra delay is e^2.33 ≈ 10x the median
        // extra; a uniform or constant draw would never get there.
        let p99 = Duration::from_nanos(samples[samples.len() * 99 / 100]);
        assert!(p99 > 30 * MS, "p99 {p99:?}");
    }

    #[test]
    fn uniform_covers_its_range() {
        let mut rng = SmallRng::seed_from_u64(3);
        let latency = Latency::Uniform {
            min: 10 * MS,
            max: 20 * MS,
        };
        let samples: Vec<u64> = (0..5_000).map(|_| latency.sample(&mut rng)).collect();
        assert!(samples.iter().any(|&s| s < nanos(11 * MS)));
        assert!(samples.iter().any(|&s| s > nanos(19 * MS)));
    }

    #[test]
    fn validation_rejects_bad_values() {
        assert!(LinkConfig::default().validate().is_ok());
        assert!(LinkConfig::default().with_loss(1.0).validate().is_ok());
        for bad in [
            LinkConfig::default().with_loss(1.5),
            LinkConfig::default().with_duplicate(-0.1),
            LinkConfig::default().with_reorder(f64::NAN, MS),
            LinkConfig::new(Latency::Uniform {
                min: 2 * MS,
                max: MS,
            }),
            LinkConfig::new(Latency::LogNormal {
                min: 2 * MS,
                median: MS,
                sigma: 1.0,
                max: 3 * MS,
            }),
            LinkConfig::new(Latency::LogNormal {
                min: MS,
                median: MS,
                sigma: f64::INFINITY,
                max: 3 * MS,
            }),
        ] {
            assert!(
                matches!(bad.validate(), Err(SimError::InvalidLink { .. })),
                "{bad:?} passed"
            );
        }
    }
}
