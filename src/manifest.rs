//! `model.json`, schema `diffusion-rt.model/1`: how a directory of ONNX files becomes a denoiser.
//!
//! Parsing is strict: an unknown key is an error, so a typo (`"predicton"`) never silently falls back to
//! a default. Every error names the file and, where serde can tell, the key and line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits;
use crate::schedule::{
    BetaSchedule, DiscreteSchedule, EdmSchedule, FinalSigmas, FlowSchedule, NoiseSchedule, TimestepSpacing, VpSchedule,
};

pub const SCHEMA: &str = "diffusion-rt.model/1";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub name: String,
    /// Shape of one sample without the batch dimension, e.g. `[1, 16, 16]` or `[4, 64, 64]` latents.
    pub sample_shape: Vec<usize>,
    pub denoiser: DenoiserSpec,
    pub noise_schedule: NoiseScheduleSpec,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub output: OutputSpec,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DenoiserSpec {
    pub onnx: String,
    pub sample_input: String,
    #[serde(default)]
    pub time_input: Option<TimeInput>,
    #[serde(default)]
    pub class_input: Option<ClassInput>,
    #[serde(default)]
    pub cond_inputs: Vec<CondInput>,
    /// A per-sample float tensor `[batch, tokens, width]`, e.g. a UNet's `encoder_hidden_states`.
    #[serde(default)]
    pub context_input: Option<ContextInput>,
    /// Channels the sample input takes beyond the sample's own, filled per sample by the caller
    /// and appended after them (an inpainting UNet's mask and masked-image latents: 5).
    #[serde(default)]
    pub sample_extra_channels: usize,
    /// Float tensors the caller fills per generation (an observation, a low-resolution image, a
    /// measured signal), each of the graph's fixed per-sample shape.
    #[serde(default)]
    pub tensor_inputs: Vec<TensorInput>,
    pub output: String,
    pub prediction: Prediction,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeInput {
    pub name: String,
    pub kind: TimeKind,
    #[serde(default = "one")]
    pub scale: f64,
}

fn one() -> f64 {
    1.0
}

/// What the network's time input means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeKind {
    /// Discrete training timestep (fractional values as diffusers interpolates them).
    Index,
    /// Variance-exploding sigma.
    Sigma,
    /// EDM's `c_noise = ln(sigma) / 4`.
    CNoise,
    /// Flow time in [0, 1].
    T,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassInput {
    pub name: String,
    pub num_classes: u32,
    /// The label meaning "no class"; classifier-free guidance needs it.
    #[serde(default)]
    pub null_class: Option<i64>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContextInput {
    pub name: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TensorInput {
    pub name: String,
    /// The value of every element on guidance's unconditional branch (the "no observation" the
    /// network was trained with); without it, guidance above 1 is an error for this model.
    #[serde(default)]
    pub null: Option<f32>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CondInput {
    pub name: String,
    pub default: f32,
}

/// What the network's output means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    Epsilon,
    VPrediction,
    /// The clean sample itself (x0), e.g. an EDM-preconditioned or consistency model.
    Sample,
    /// Flow matching velocity `noise - x0`.
    Velocity,
}

/// `noise_schedule`: the training noise schedule. Keys of `discrete` are named as in diffusers'
/// `scheduler_config.json`; an absent `timestep_spacing` gives each sampler its diffusers scheduler's
/// own default, as `Scheduler.from_config` does.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NoiseScheduleSpec {
    Discrete {
        #[serde(default)]
        num_train_timesteps: Option<usize>,
        #[serde(default)]
        beta_schedule: Option<String>,
        #[serde(default)]
        beta_start: Option<f64>,
        #[serde(default)]
        beta_end: Option<f64>,
        #[serde(default)]
        timestep_spacing: Option<String>,
        #[serde(default)]
        steps_offset: Option<usize>,
        /// DDIM's final alpha: 1 (true) or `alphas_cumprod[0]` (false, Stable Diffusion's configs).
        #[serde(default)]
        set_alpha_to_one: Option<bool>,
        #[serde(default)]
        final_sigmas_type: Option<String>,
        #[serde(default)]
        original_inference_steps: Option<usize>,
    },
    Edm {
        sigma_min: f64,
        sigma_max: f64,
        #[serde(default)]
        sigma_data: Option<f64>,
        #[serde(default)]
        rho: Option<f64>,
    },
    Flow {
        #[serde(default)]
        num_train_timesteps: Option<usize>,
        #[serde(default)]
        shift: Option<f64>,
    },
    /// Song et al.'s continuous variance-preserving SDE.
    Vp {
        #[serde(default)]
        beta_min: Option<f64>,
        #[serde(default)]
        beta_max: Option<f64>,
        #[serde(default)]
        t_min: Option<f64>,
    },
}

impl NoiseScheduleSpec {
    /// The schedule the samplers use; errors name the offending key.
    pub fn to_schedule(&self) -> Result<NoiseSchedule> {
        let key = |k: &str, e: Error| Error::Manifest(format!("key `noise_schedule.{k}`: {}", e.message()));
        Ok(match self {
            NoiseScheduleSpec::Discrete {
                num_train_timesteps,
                beta_schedule,
                beta_start,
                beta_end,
                timestep_spacing,
                steps_offset,
                set_alpha_to_one,
                final_sigmas_type,
                original_inference_steps,
            } => {
                let d = DiscreteSchedule::default();
                let s = DiscreteSchedule {
                    num_train_timesteps: num_train_timesteps.unwrap_or(d.num_train_timesteps),
                    beta_start: beta_start.unwrap_or(d.beta_start),
                    beta_end: beta_end.unwrap_or(d.beta_end),
                    beta_schedule: match beta_schedule {
                        Some(n) => BetaSchedule::from_name(n).map_err(|e| key("beta_schedule", e))?,
                        None => d.beta_schedule,
                    },
                    timestep_spacing: match timestep_spacing {
                        Some(n) => Some(TimestepSpacing::from_name(n).map_err(|e| key("timestep_spacing", e))?),
                        None => None,
                    },
                    steps_offset: steps_offset.unwrap_or(d.steps_offset),
                    set_alpha_to_one: set_alpha_to_one.unwrap_or(d.set_alpha_to_one),
                    final_sigmas_type: match final_sigmas_type {
                        Some(n) => FinalSigmas::from_name(n).map_err(|e| key("final_sigmas_type", e))?,
                        None => d.final_sigmas_type,
                    },
                    original_inference_steps: original_inference_steps.unwrap_or(d.original_inference_steps),
                };
                if s.num_train_timesteps < 2 {
                    return Err(key("num_train_timesteps", Error::InvalidArgument("must be at least 2".into())));
                }
                if !(s.beta_start > 0.0 && s.beta_end > s.beta_start && s.beta_end < 1.0) {
                    return Err(key(
                        "beta_start",
                        Error::InvalidArgument(format!(
                            "need 0 < beta_start < beta_end < 1, got {} and {}",
                            s.beta_start, s.beta_end
                        )),
                    ));
                }
                if s.original_inference_steps == 0 {
                    return Err(key("original_inference_steps", Error::InvalidArgument("must be at least 1".into())));
                }
                NoiseSchedule::Discrete(s)
            }
            NoiseScheduleSpec::Edm { sigma_min, sigma_max, sigma_data, rho } => {
                let d = EdmSchedule::default();
                let s = EdmSchedule {
                    sigma_min: *sigma_min,
                    sigma_max: *sigma_max,
                    sigma_data: sigma_data.unwrap_or(d.sigma_data),
                    rho: rho.unwrap_or(d.rho),
                };
                if !(s.sigma_min > 0.0 && s.sigma_max > s.sigma_min && s.sigma_max.is_finite()) {
                    return Err(key(
                        "sigma_min",
                        Error::InvalidArgument(format!(
                            "need 0 < sigma_min < sigma_max, got {} and {}",
                            s.sigma_min, s.sigma_max
                        )),
                    ));
                }
                if !(s.sigma_data > 0.0 && s.rho > 0.0 && s.rho.is_finite()) {
                    return Err(key(
                        "sigma_data",
                        Error::InvalidArgument("sigma_data and rho must be positive".into()),
                    ));
                }
                NoiseSchedule::Edm(s)
            }
            NoiseScheduleSpec::Flow { num_train_timesteps, shift } => {
                let d = FlowSchedule::default();
                let s = FlowSchedule {
                    num_train_timesteps: num_train_timesteps.unwrap_or(d.num_train_timesteps),
                    shift: shift.unwrap_or(d.shift),
                };
                if s.num_train_timesteps < 2 || !(s.shift.is_finite() && s.shift > 0.0) {
                    return Err(key(
                        "shift",
                        Error::InvalidArgument(format!(
                            "need num_train_timesteps >= 2 and shift > 0, got {} and {}",
                            s.num_train_timesteps, s.shift
                        )),
                    ));
                }
                NoiseSchedule::Flow(s)
            }
            NoiseScheduleSpec::Vp { beta_min, beta_max, t_min } => {
                let d = VpSchedule::default();
                let s = VpSchedule {
                    beta_min: beta_min.unwrap_or(d.beta_min),
                    beta_max: beta_max.unwrap_or(d.beta_max),
                    t_min: t_min.unwrap_or(d.t_min),
                };
                if !(s.beta_min >= 0.0 && s.beta_max > s.beta_min && s.beta_max.is_finite()) {
                    return Err(key(
                        "beta_max",
                        Error::InvalidArgument(format!(
                            "need 0 <= beta_min < beta_max, got {} and {}",
                            s.beta_min, s.beta_max
                        )),
                    ));
                }
                if !(s.t_min > 0.0 && s.t_min < 1.0) {
                    return Err(key("t_min", Error::InvalidArgument(format!("must lie in (0, 1), got {}", s.t_min))));
                }
                NoiseSchedule::Vp(s)
            }
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub sampler: Option<String>,
    #[serde(default)]
    pub steps: Option<u32>,
    #[serde(default)]
    pub guidance: Option<f32>,
    /// A step table found offline (sigmas in the model's VE convention), used instead of the schedule.
    #[serde(default)]
    pub sigmas: Option<Vec<f64>>,
    /// `[lo, hi]` in σ/α: with the default guidance scale (none requested), guide only there.
    #[serde(default)]
    pub guidance_interval: Option<[f64; 2]>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    #[serde(default = "default_kind")]
    pub kind: OutputKind,
    #[serde(default = "default_range")]
    pub value_range: [f32; 2],
}

impl Default for OutputSpec {
    fn default() -> Self {
        OutputSpec { kind: OutputKind::Image, value_range: default_range() }
    }
}

fn default_kind() -> OutputKind {
    OutputKind::Image
}
fn default_range() -> [f32; 2] {
    [-1.0, 1.0]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// `[C, H, W]` samples shown as an image (C = 1 or 3).
    Image,
    /// Anything else (trajectories, audio, latents): saved raw only.
    Tensor,
}

impl Manifest {
    /// Reads `dir/model.json`.
    pub fn load(dir: &Path) -> Result<(Manifest, PathBuf)> {
        let path = dir.join("model.json");
        if dir.is_file() {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            return Err(Error::io(dir, format!("is a file: give the directory that holds it ({})", parent.display())));
        }
        if !dir.is_dir() {
            return Err(Error::io(dir, "model directory not found"));
        }
        if !path.exists() {
            return Err(Error::io(
                dir,
                "holds neither model.json (a model directory) nor model_index.json (a Stable Diffusion export)",
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let m = Manifest::parse(&text).map_err(|e| match e {
            Error::Manifest(msg) => Error::Manifest(format!("{}: {msg}", path.display())),
            other => other,
        })?;
        Ok((m, path))
    }

    /// Parses and validates the manifest text (without looking at the ONNX graph).
    pub fn parse(text: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| Error::Manifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::Manifest(format!("key `{key}`: {why}")));
        if self.schema != SCHEMA {
            return bad("schema", format!("unsupported schema {:?}; this runtime reads {SCHEMA:?}", self.schema));
        }
        if self.sample_shape.is_empty() || self.sample_shape.contains(&0) {
            return bad(
                "sample_shape",
                format!("must be non-empty with positive dimensions, got {:?}", self.sample_shape),
            );
        }
        if self.sample_shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none_or(|n| n > 1 << 28) {
            return bad("sample_shape", format!("{:?} is too large", self.sample_shape));
        }
        let d = &self.denoiser;
        if let Some(t) = &d.time_input {
            if !(t.scale.is_finite() && t.scale > 0.0) {
                return bad("denoiser.time_input.scale", format!("must be a positive number, got {}", t.scale));
            }
        }
        if let Some(c) = &d.class_input {
            if c.num_classes == 0 {
                return bad("denoiser.class_input.num_classes", "must be at least 1".into());
            }
            if let Some(n) = c.null_class {
                if n < 0 {
                    return bad("denoiser.class_input.null_class", format!("must be >= 0, got {n}"));
                }
            }
        }
        let mut names = vec![d.sample_input.as_str()];
        names.extend(d.time_input.as_ref().map(|t| t.name.as_str()));
        names.extend(d.class_input.as_ref().map(|c| c.name.as_str()));
        names.extend(d.cond_inputs.iter().map(|c| c.name.as_str()));
        names.extend(d.context_input.as_ref().map(|c| c.name.as_str()));
        names.extend(d.tensor_inputs.iter().map(|t| t.name.as_str()));
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return bad("denoiser", format!("input `{n}` is named twice"));
            }
        }
        for c in &d.cond_inputs {
            if !c.default.is_finite() {
                return bad("denoiser.cond_inputs.default", format!("`{}` has a non-finite default", c.name));
            }
        }
        if let Some(t) = d.tensor_inputs.iter().find(|t| t.null.is_some_and(|v| !v.is_finite())) {
            return bad("denoiser.tensor_inputs.null", format!("`{}` has a non-finite null", t.name));
        }
        self.noise_schedule.to_schedule()?;
        // The defaults are a request: the request's limits hold for them.
        let d = &self.defaults;
        let limit = |key: &str, r: Result<()>| r.or_else(|e| bad(key, e.message()));
        if let Some(n) = d.steps {
            limit("defaults.steps", limits::steps(n as usize).map(|_| ()))?;
        }
        if let Some(g) = d.guidance {
            limit("defaults.guidance", limits::guidance(g).map(|_| ()))?;
        }
        if let Some([lo, hi]) = d.guidance_interval {
            limit("defaults.guidance_interval", limits::guidance_interval(lo, hi).map(|_| ()))?;
        }
        if let Some(s) = &d.sigmas {
            limit("defaults.sigmas", limits::sigma_table(s).map(|_| ()))?;
        }
        let [lo, hi] = self.output.value_range;
        if !(lo.is_finite() && hi.is_finite() && hi > lo) {
            return bad("output.value_range", format!("need two finite values lo < hi, got [{lo}, {hi}]"));
        }
        Ok(())
    }

    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    pub fn null_class(&self) -> Option<i64> {
        self.denoiser.class_input.as_ref().and_then(|c| c.null_class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "schema": "diffusion-rt.model/1", "name": "m", "sample_shape": [1, 4, 4],
      "denoiser": {"onnx": "d.onnx", "sample_input": "x", "time_input": {"name": "t", "kind": "index"},
                   "output": "y", "prediction": "epsilon"},
      "noise_schedule": {"type": "discrete"}
    }"#;

    fn err(text: &str) -> String {
        match Manifest::parse(text) {
            Err(Error::Manifest(m)) => m,
            other => panic!("expected a manifest error, got {other:?}"),
        }
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.sample_len(), 16);
        assert_eq!(m.denoiser.time_input.as_ref().unwrap().scale, 1.0);
        assert_eq!(m.output.value_range, [-1.0, 1.0]);
        assert!(
            matches!(m.noise_schedule.to_schedule().unwrap(), NoiseSchedule::Discrete(d) if d == DiscreteSchedule::default())
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (GOOD.replace("\"prediction\"", "\"predicton\""), "predicton"),
            (GOOD.replace("\"name\": \"m\",", "\"name\": \"m\", \"extra\": 1,"), "extra"),
            (GOOD.replace("diffusion-rt.model/1", "diffusion-rt.model/9"), "schema"),
            (GOOD.replace("[1, 4, 4]", "[1, 0, 4]"), "sample_shape"),
            (GOOD.replace("\"epsilon\"", "\"eps\""), "eps"),
            (GOOD.replace("\"index\"", "\"idx\""), "idx"),
            (
                GOOD.replace("{\"type\": \"discrete\"}", "{\"type\": \"discrete\", \"beta_schedule\": \"cosine\"}"),
                "beta_schedule",
            ),
            (
                GOOD.replace("{\"type\": \"discrete\"}", "{\"type\": \"discrete\", \"timestep_spacing\": \"even\"}"),
                "timestep_spacing",
            ),
            (
                GOOD.replace(
                    "{\"type\": \"discrete\"}",
                    "{\"type\": \"discrete\", \"beta_start\": 0.5, \"beta_end\": 0.1}",
                ),
                "beta_start",
            ),
            (
                GOOD.replace("{\"type\": \"discrete\"}", "{\"type\": \"edm\", \"sigma_min\": 5, \"sigma_max\": 1}"),
                "sigma_min",
            ),
            (GOOD.replace("{\"type\": \"discrete\"}", "{\"type\": \"flow\", \"shift\": -1}"), "shift"),
            (GOOD.replace("{\"type\": \"discrete\"}", "{\"type\": \"ve\"}"), "ve"),
            (GOOD.replace("{\"type\": \"discrete\"}", "{\"type\": \"vp\", \"beta_max\": 0.05}"), "beta_max"),
            (GOOD.replace("{\"type\": \"discrete\"}", "{\"type\": \"vp\", \"t_min\": 0}"), "t_min"),
            (
                GOOD.replace(
                    "\"output\": \"y\"",
                    "\"output\": \"y\", \"tensor_inputs\": [{\"name\": \"o\"}, {\"name\": \"o\"}]",
                ),
                "named twice",
            ),
            (
                GOOD.replace(
                    "\"output\": \"y\"",
                    "\"output\": \"y\", \"tensor_inputs\": [{\"name\": \"o\", \"nul\": 0}]",
                ),
                "nul",
            ),
            (GOOD.replace("\"kind\": \"index\"}", "\"kind\": \"index\", \"scale\": 0}"), "scale"),
            (
                GOOD.replace(
                    "\"output\": \"y\"",
                    "\"output\": \"y\", \"class_input\": {\"name\": \"x\", \"num_classes\": 3}",
                ),
                "named twice",
            ),
            (
                GOOD.replace("\"noise_schedule\"", "\"defaults\": {\"guidance_interval\": [5, 1]}, \"noise_schedule\""),
                "defaults.guidance_interval",
            ),
            (
                GOOD.replace("\"output\": \"y\"", "\"output\": \"y\", \"context_input\": {\"name\": \"x\"}"),
                "named twice",
            ),
            ("{not json".to_string(), "line 1"),
            ("".to_string(), "EOF"),
        ];
        for (text, needle) in cases {
            let msg = err(&text);
            assert!(msg.contains(needle), "`{msg}` should mention `{needle}`");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("drt-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.json"), GOOD.replace("\"prediction\"", "\"predicton\"")).unwrap();
        let msg = Manifest::load(&dir).unwrap_err().to_string();
        assert!(msg.contains("model.json") && msg.contains("predicton"), "{msg}");
        std::fs::remove_file(dir.join("model.json")).unwrap();
        assert!(matches!(Manifest::load(&dir), Err(Error::Io(m)) if m.contains("model.json")));
        assert!(matches!(Manifest::load(&dir.join("absent")), Err(Error::Io(m)) if m.contains("absent")));
        std::fs::remove_dir_all(&dir).ok();
    }
}
