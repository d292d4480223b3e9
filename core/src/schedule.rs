//! How many tokens each parallel step decides, and the CFG scale per step. Pure functions that
//! reproduce the reference `generate()`'s float64 arithmetic and `int()` truncation.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Mask schedule: the fraction of tokens still unknown after each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    #[default]
    Arccos,
    Cosine,
}

impl std::str::FromStr for Schedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "arccos" => Ok(Self::Arccos),
            "cosine" => Ok(Self::Cosine),
            _ => Err(Error::InvalidRequest(format!(
                "unknown schedule `{s}` (expected `arccos` or `cosine`)"
            ))),
        }
    }
}

/// How the CFG scale evolves over the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CfgSchedule {
    #[default]
    Linear,
    Constant,
}

impl std::str::FromStr for CfgSchedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(Self::Linear),
            "constant" => Ok(Self::Constant),
            _ => Err(Error::InvalidRequest(format!(
                "unknown CFG schedule `{s}` (expected `linear` or `constant`)"
            ))),
        }
    }
}

/// Tokens decided at each of `steps` steps for `n` unknown tokens.
///
/// Mirrors the reference loop: `ratio` from the schedule, `mask_len = int(n * ratio)` clamped to
/// `[1, n - last - 1]`, the rest decided now, and the last step takes whatever is left. One
/// deliberate difference: the lower clamp is the number of steps still to come rather than 1, so a
/// step never gets zero tokens (where the reference would crash); wherever the reference's own
/// counts are all positive the two agree.
pub fn num_pred(schedule: Schedule, n: usize, steps: usize) -> Result<Vec<usize>> {
    if steps == 0 {
        return Err(Error::InvalidRequest(
            "the number of steps must be at least 1".into(),
        ));
    }
    if steps > n {
        return Err(Error::InvalidRequest(format!(
            "{steps} steps for {n} tokens: each step decides at least one token, so use at most {n} steps"
        )));
    }
    let mut counts = Vec::with_capacity(steps);
    let mut last = 0usize;
    for step in 0..steps {
        let count = if step == steps - 1 {
            n - last
        } else {
            let progress = (step + 1) as f64;
            let ratio = match schedule {
                Schedule::Arccos => (progress / steps as f64).acos() / (std::f64::consts::PI / 2.0),
                Schedule::Cosine => ((std::f64::consts::PI / 2.0) * progress / steps as f64).cos(),
            };
            let mask_len = (n as f64 * ratio) as usize;
            let still_to_come = steps - 1 - step;
            let mask_len = mask_len.min(n - last - 1).max(still_to_come.max(1));
            n - last - mask_len
        };
        last += count;
        counts.push(count);
    }
    Ok(counts)
}

/// CFG scale of every step: `linear` ramps `1 + (g - 1) * decided / n` using the count decided
/// *after* the step; `constant` is `g` throughout.
pub fn cfg_scales(kind: CfgSchedule, guidance: f64, counts: &[usize]) -> Vec<f64> {
    let n: usize = counts.iter().sum();
    let mut last = 0usize;
    counts
        .iter()
        .map(|c| {
            last += c;
            match kind {
                CfgSchedule::Linear => 1.0 + (guidance - 1.0) * last as f64 / n as f64,
                CfgSchedule::Constant => guidance,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_positive_and_sum_to_n() {
        for n in 1..=300 {
            for steps in 1..=n {
                for s in [Schedule::Arccos, Schedule::Cosine] {
                    let c = num_pred(s, n, steps).expect("valid");
                    assert_eq!(c.len(), steps);
                    assert_eq!(c.iter().sum::<usize>(), n, "{s:?} n={n} T={steps}");
                    assert!(c.iter().all(|&k| k >= 1), "{s:?} n={n} T={steps}: {c:?}");
                }
            }
        }
    }

    #[test]
    fn rejects_zero_and_too_many_steps() {
        assert!(num_pred(Schedule::Arccos, 10, 0).is_err());
        assert!(num_pred(Schedule::Arccos, 10, 11).is_err());
    }

    #[test]
    fn one_token_per_step_when_steps_equal_n() {
        for s in [Schedule::Arccos, Schedule::Cosine] {
            assert!(num_pred(s, 64, 64).expect("valid").iter().all(|&c| c == 1));
        }
    }
}
