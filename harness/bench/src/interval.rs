//! The median of paired per-round ratios and a distribution-free confidence interval for
//! it (order statistics of the binomial), the statistics of the interleaved bench.
//!
//! Each round measures every configuration once, in a fresh order, so a ratio of two
//! configurations taken within one round shares that round's load on the host. The
//! median of those ratios with an interval that assumes nothing about their
//! distribution is what the headline reports; a ratio whose interval is wider than
//! ±[`MAX_HALF_WIDTH`] of its median is not a measurement.

/// The widest interval, as a fraction of the median on either side, that still counts as
/// a measured ratio.
pub const MAX_HALF_WIDTH: f64 = 0.10;

/// The confidence the interval asks for: the smallest order-statistic interval whose
/// coverage is at least this.
pub const CONFIDENCE: f64 = 0.95;

/// The median of `v` and its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    /// The exact coverage of [lo, hi] for the median (at least [`CONFIDENCE`]), or 0 when
    /// there are too few values for any interval of that confidence.
    pub coverage: f64,
    pub n: usize,
}

impl Estimate {
    /// The larger side of the interval, as a fraction of the median.
    pub fn half_width(&self) -> f64 {
        if self.median <= 0.0 {
            return f64::INFINITY;
        }
        ((self.median - self.lo).max(self.hi - self.median)) / self.median
    }

    /// True when the interval exists and is within ±[`MAX_HALF_WIDTH`] of the median.
    pub fn measured(&self) -> bool {
        self.coverage >= CONFIDENCE && self.half_width() <= MAX_HALF_WIDTH
    }

    /// `2.31 [2.20, 2.45]`, or `not measured (2.31 [1.50, 3.10], n=5)`.
    pub fn show(&self) -> String {
        let core = if self.coverage > 0.0 {
            format!("{:.2} [{:.2}, {:.2}]", self.median, self.lo, self.hi)
        } else {
            format!("{:.2} [no interval]", self.median)
        };
        if self.measured() {
            core
        } else {
            format!("not measured ({core}, n={})", self.n)
        }
    }
}

/// P(X <= k) for X ~ Binomial(n, 1/2).
fn binom_half_cdf(n: usize, k: usize) -> f64 {
    let mut c = 1.0f64; // C(n, 0)
    let mut sum = 0.0;
    for i in 0..=k.min(n) {
        if i > 0 {
            c = c * (n + 1 - i) as f64 / i as f64;
        }
        sum += c;
    }
    sum / 2f64.powi(n as i32)
}

/// The median of `v` and the interval [x_(k), x_(n+1-k)] of its order statistics with the
/// largest k whose coverage, 1 - 2 P(X <= k - 1) for X ~ Binomial(n, 1/2), is at least
/// [`CONFIDENCE`]. None for an empty `v` or one holding a value that is not finite.
pub fn median_ci(v: &[f64]) -> Option<Estimate> {
    if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    let mut best = None;
    for k in 1..=n / 2 {
        let coverage = 1.0 - 2.0 * binom_half_cdf(n, k - 1);
        if coverage >= CONFIDENCE {
            best = Some((k, coverage));
        } else {
            break;
        }
    }
    Some(match best {
        Some((k, coverage)) => Estimate {
            median,
            lo: s[k - 1],
            hi: s[n - k],
            coverage,
            n,
        },
        None => Estimate {
            median,
            lo: median,
            hi: median,
            coverage: 0.0,
            n,
        },
    })
}

/// The spread of per-boot medians: (min, max) over boots, as ratios of the overall median.
pub fn spread(medians: &[f64]) -> Option<(f64, f64)> {
    let all = median_ci(medians)?;
    let lo = medians.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = medians.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lo / all.median, hi / all.median))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_cdf() {
        assert!((binom_half_cdf(1, 0) - 0.5).abs() < 1e-12);
        assert!((binom_half_cdf(6, 0) - 1.0 / 64.0).abs() < 1e-12);
        assert!((binom_half_cdf(9, 1) - 10.0 / 512.0).abs() < 1e-12);
        assert!((binom_half_cdf(5, 5) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn too_few_rounds_have_no_interval() {
        // With 5 values the widest interval, [min, max], covers 1 - 2/32 = 93.75%.
        let e = median_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]).expect("estimate");
        assert_eq!(e.median, 3.0);
        assert_eq!(e.coverage, 0.0);
        assert!(!e.measured());
        assert!(e.show().starts_with("not measured (3.00 [no interval]"));
    }

    #[test]
    fn six_rounds_give_min_and_max() {
        let e = median_ci(&[2.0, 2.1, 1.9, 2.05, 1.95, 2.02]).expect("estimate");
        assert!((e.median - 2.01).abs() < 1e-9);
        assert_eq!((e.lo, e.hi), (1.9, 2.1));
        assert!((e.coverage - (1.0 - 2.0 / 64.0)).abs() < 1e-12);
        assert!(e.measured(), "{e:?}");
        assert_eq!(e.show(), "2.01 [1.90, 2.10]");
    }

    #[test]
    fn nine_rounds_drop_one_from_each_end() {
        let v = [5.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0];
        let e = median_ci(&v).expect("estimate");
        assert_eq!(e.median, 5.0);
        assert_eq!((e.lo, e.hi), (2.0, 8.0));
        assert!((e.coverage - (1.0 - 2.0 * 10.0 / 512.0)).abs() < 1e-12);
        // ±60%: an interval, but not a measurement.
        assert!(!e.measured());
        assert!(e.show().starts_with("not measured (5.00 [2.00, 8.00], n=9"));
    }

    #[test]
    fn one_outlier_round_does_not_move_the_median() {
        let mut v = vec![3.0; 8];
        v.push(0.2); // a round that the host's load landed on
        let e = median_ci(&v).expect("estimate");
        assert_eq!(e.median, 3.0);
        assert_eq!((e.lo, e.hi), (3.0, 3.0));
        assert!(e.measured());
    }

    #[test]
    fn bad_input() {
        assert!(median_ci(&[]).is_none());
        assert!(median_ci(&[1.0, f64::NAN]).is_none());
        assert!(median_ci(&[1.0, f64::INFINITY]).is_none());
    }

    #[test]
    fn half_width_is_the_larger_side() {
        let e = Estimate {
            median: 2.0,
            lo: 1.9,
            hi: 2.3,
            coverage: 0.97,
            n: 6,
        };
        assert!((e.half_width() - 0.15).abs() < 1e-12);
        assert!(!e.measured());
    }

    #[test]
    fn spread_of_boots() {
        let (lo, hi) = spread(&[2.0, 2.2, 1.8]).expect("spread");
        assert!((lo - 0.9).abs() < 1e-12 && (hi - 1.1).abs() < 1e-12);
        assert!(spread(&[]).is_none());
    }
}
