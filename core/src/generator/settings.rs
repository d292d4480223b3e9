//! The sampler settings of a request and the settings a model recommends.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sampler::DrawSettings;
use crate::schedule::{CfgSchedule, Schedule};

/// Sampler settings of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Parallel steps T (clamped to the number of unknown tokens).
    pub steps: usize,
    pub schedule: Schedule,
    /// Classifier-free guidance scale; 1 disables guidance and its unconditional half.
    pub cfg_scale: f64,
    pub cfg_schedule: CfgSchedule,
    pub temperature: f64,
    /// 0: off.
    pub top_k: usize,
    /// 1: off.
    pub top_p: f64,
    pub seed: u64,
    /// Settling (not in the reference; 0 = off): once at least this many cells are decided (at
    /// the end of the step that reaches it), each decided cell is drawn again given all the
    /// others, [`SETTLE_SWEEPS`] times over, before generation goes on. The first cells of a generation are drawn with little or no context, and the very
    /// first step cannot tell its cells apart at all: its queries attend to the class token
    /// alone, so every position gets the same distribution. Settling lets those early tokens
    /// see each other, so the image's layout (where a horizon lies, which way stripes run) is
    /// decided by tokens that agree with their positions. An edit with at least this many known
    /// cells is not settled: its first cells already read that much context.
    #[serde(default)]
    pub settle: usize,
    /// Polishing passes after the last step (not in the reference; 0 = off). Each pass splits
    /// the generated cells into [`POLISH_GROUPS`] random groups; for each group the model reads
    /// every other cell and draws again each token that has become improbable there (below
    /// [`POLISH_BELOW`] under the sampling distribution). Stray tokens that disagree with the
    /// finished image are replaced; tokens it agrees with stay.
    #[serde(default)]
    pub polish: usize,
}

/// Sweeps over the early cells when settling.
pub const SETTLE_SWEEPS: usize = 4;
/// Groups (and so steps) per polishing pass.
pub const POLISH_GROUPS: usize = 4;
/// A polished token is drawn again when its probability given the rest is below this.
pub const POLISH_BELOW: f64 = 0.1;
/// Upper bounds that keep a request's work finite.
const MAX_SETTLE: usize = 256;
const MAX_POLISH: usize = 16;

/// Steps of the product's default settings.
pub const DEFAULT_STEPS: usize = 16;

/// The defaults of the CLI and the app when a model recommends nothing (see
/// [`SamplingDefaults`]): 16 steps and CFG 3, quicker than the reference's 64 steps.
impl Default for Settings {
    fn default() -> Self {
        Self {
            steps: DEFAULT_STEPS,
            cfg_scale: 3.0,
            ..Self::reference()
        }
    }
}

impl Settings {
    /// The defaults of the reference's `generate` (64 steps, arccos schedule, CFG 4 with the
    /// linear CFG schedule, temperature 1, no top-k / top-p).
    pub fn reference() -> Self {
        Self {
            steps: 64,
            schedule: Schedule::Arccos,
            cfg_scale: 4.0,
            cfg_schedule: CfgSchedule::Linear,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            settle: 0,
            polish: 0,
        }
    }
}

/// Sampler settings a model recommends, read from a `"sampling"` object in the JSON config
/// beside its weights (the idea of a `generation_config.json`): a small model trained here may
/// want other settings than the reference's defaults. Every field is optional; what is absent
/// keeps the caller's default, and an explicit user choice always wins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polish: Option<usize>,
}

impl SamplingDefaults {
    /// True when the model recommends nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` with every recommended field applied; the result is validated.
    pub fn apply(&self, base: &Settings) -> Result<Settings> {
        let mut s = base.clone();
        if let Some(v) = self.steps {
            s.steps = v;
        }
        if let Some(v) = &self.schedule {
            s.schedule = v.parse()?;
        }
        if let Some(v) = self.cfg_scale {
            s.cfg_scale = v;
        }
        if let Some(v) = &self.cfg_schedule {
            s.cfg_schedule = v.parse()?;
        }
        if let Some(v) = self.temperature {
            s.temperature = v;
        }
        if let Some(v) = self.top_k {
            s.top_k = v;
        }
        if let Some(v) = self.top_p {
            s.top_p = v;
        }
        if let Some(v) = self.settle {
            s.settle = v;
        }
        if let Some(v) = self.polish {
            s.polish = v;
        }
        s.validate()?;
        Ok(s)
    }
}

impl Settings {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRequest(m));
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if !(self.cfg_scale.is_finite() && (0.0..=100.0).contains(&self.cfg_scale)) {
            return bad(format!(
                "CFG scale {} must be within [0, 100]",
                self.cfg_scale
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0 && self.temperature <= 100.0) {
            return bad(format!(
                "temperature {} must be within (0, 100]",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p {} must be within (0, 1]", self.top_p));
        }
        if self.settle > MAX_SETTLE {
            return bad(format!(
                "settle {} must be at most {MAX_SETTLE} cells",
                self.settle
            ));
        }
        if self.polish > MAX_POLISH {
            return bad(format!(
                "polish {} must be at most {MAX_POLISH} passes",
                self.polish
            ));
        }
        Ok(())
    }

    pub(super) fn draw(&self) -> DrawSettings {
        DrawSettings {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommended_sampling_overrides_only_what_it_names() {
        let base = Settings::default();
        let rec: SamplingDefaults =
            serde_json::from_str(r#"{"cfg_schedule": "constant", "temperature": 0.8}"#)
                .expect("test");
        let s = rec.apply(&base).expect("test");
        assert_eq!(s.cfg_schedule, CfgSchedule::Constant);
        assert_eq!(s.temperature, 0.8);
        assert_eq!(
            (s.steps, s.cfg_scale, s.top_k),
            (base.steps, base.cfg_scale, base.top_k)
        );
        assert!(SamplingDefaults::default().is_empty() && !rec.is_empty());
        let bad: SamplingDefaults =
            serde_json::from_str(r#"{"schedule": "zigzag"}"#).expect("test");
        assert!(bad.apply(&base).is_err());
        let absurd: SamplingDefaults =
            serde_json::from_str(r#"{"temperature": -1}"#).expect("test");
        assert!(absurd.apply(&base).is_err());
    }
}
