//! The configuration files of a Stable Diffusion export, read into what the runtime needs: the noise
//! schedule and default sampler from `scheduler/scheduler_config.json`, the VAE's scaling factor and
//! latent/pixel ratio, the UNet's default latent size.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::model_err;
use crate::error::{Error, Result};
use crate::schedule::SigmaSpacing;

/// What the runtime takes from `scheduler_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// The `noise_schedule` object of a model.json, built from the diffusers keys.
    pub noise_schedule: Value,
    /// `epsilon`, `v_prediction` or `sample`, as model.json names them.
    pub prediction: &'static str,
    /// The sampler the scheduler class corresponds to.
    pub sampler: &'static str,
    pub spacing: SigmaSpacing,
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| model_err(path, e))
}

/// diffusers scheduler classes and the samplers that walk the same grid with the same update.
const SAMPLERS: [(&str, &str); 7] = [
    ("DDIMScheduler", "ddim"),
    ("DDPMScheduler", "ddpm"),
    ("EulerDiscreteScheduler", "euler"),
    ("EulerAncestralDiscreteScheduler", "euler-a"),
    ("HeunDiscreteScheduler", "heun"),
    ("DPMSolverMultistepScheduler", "dpmpp-2m"),
    ("LCMScheduler", "lcm"),
];

/// The sampler for classes without one here (PNDM, Stable Diffusion 1.x's default, among them).
pub const FALLBACK_SAMPLER: &str = "dpmpp-2m";

impl SchedulerConfig {
    pub fn read(path: &Path) -> Result<SchedulerConfig> {
        let v = read_json(path)?;
        let obj = v.as_object().ok_or_else(|| model_err(path, "expected a JSON object"))?;
        let str_key = |k: &str| obj.get(k).and_then(Value::as_str);
        let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        // Settings that change the arithmetic in ways the samplers do not follow are refused, not ignored.
        for k in ["thresholding", "rescale_betas_zero_snr", "clip_sample", "use_beta_sigmas"] {
            if flag(k) {
                return Err(model_err(path, format!("`{k}: true` is not supported")));
            }
        }
        if obj.get("trained_betas").is_some_and(|b| !b.is_null()) {
            return Err(model_err(path, "`trained_betas` is not supported; give beta_start/beta_end/beta_schedule"));
        }
        let class = str_key("_class_name").unwrap_or("");
        let mut sampler = match SAMPLERS.iter().find(|(c, _)| *c == class) {
            Some((_, s)) => *s,
            None => {
                log::warn!("{}: no sampler follows `{class}`; using {FALLBACK_SAMPLER}", path.display());
                FALLBACK_SAMPLER
            }
        };
        if sampler == "dpmpp-2m" {
            match (str_key("algorithm_type").unwrap_or("dpmsolver++"), obj.get("solver_order").and_then(Value::as_u64)) {
                ("dpmsolver++", None | Some(2)) => {}
                ("sde-dpmsolver++", None | Some(2)) => sampler = "dpmpp-2m-sde",
                (alg, order) => return Err(model_err(path, format!(
                    "DPMSolverMultistepScheduler with algorithm_type `{alg}` and solver_order {order:?} is not supported \
                     (dpmsolver++ or sde-dpmsolver++, order 2)"))),
            }
        }
        let prediction = match str_key("prediction_type").unwrap_or("epsilon") {
            "epsilon" => "epsilon",
            "v_prediction" => "v_prediction",
            "sample" => "sample",
            other => return Err(model_err(path, format!("prediction_type `{other}` is not supported"))),
        };
        let spacing = if flag("use_karras_sigmas") {
            SigmaSpacing::Karras
        } else if flag("use_exponential_sigmas") {
            SigmaSpacing::Exponential
        } else {
            SigmaSpacing::Default
        };
        let mut schedule = serde_json::Map::new();
        schedule.insert("type".into(), "discrete".into());
        for k in [
            "num_train_timesteps",
            "beta_schedule",
            "beta_start",
            "beta_end",
            "timestep_spacing",
            "steps_offset",
            "set_alpha_to_one",
            "final_sigmas_type",
            "original_inference_steps",
        ] {
            if let Some(v) = obj.get(k).filter(|v| !v.is_null()) {
                schedule.insert(k.into(), v.clone());
            }
        }
        Ok(SchedulerConfig { noise_schedule: Value::Object(schedule), prediction, sampler, spacing })
    }
}

/// What the runtime takes from `vae_decoder/config.json` (diffusers' AutoencoderKL config).
#[derive(Clone, Debug, PartialEq)]
pub struct VaeConfig {
    pub scaling_factor: f64,
    /// Pixels per latent along each side: 2^(number of blocks - 1).
    pub factor: usize,
}

#[derive(Deserialize)]
struct VaeJson {
    #[serde(default)]
    scaling_factor: Option<f64>,
    #[serde(default)]
    block_out_channels: Option<Vec<u64>>,
    #[serde(default)]
    shift_factor: Option<f64>,
}

impl VaeConfig {
    pub fn read(path: &Path) -> Result<VaeConfig> {
        let v: VaeJson = serde_json::from_value(read_json(path)?).map_err(|e| model_err(path, e))?;
        if v.shift_factor.is_some_and(|s| s != 0.0) {
            return Err(model_err(path, "a VAE `shift_factor` is not supported"));
        }
        let scaling_factor = v.scaling_factor.unwrap_or(0.18215);
        if !(scaling_factor.is_finite() && scaling_factor > 0.0) {
            return Err(model_err(path, format!("scaling_factor {scaling_factor} must be positive")));
        }
        let blocks = v.block_out_channels.map_or(4, |b| b.len());
        if !(1..=8).contains(&blocks) {
            return Err(model_err(path, format!("{blocks} VAE blocks is not a Stable Diffusion VAE")));
        }
        Ok(VaeConfig { scaling_factor, factor: 1 << (blocks - 1) })
    }
}

/// The UNet's `sample_size` (latents per side it was trained at), from `unet/config.json`.
pub fn unet_sample_size(path: &Path) -> Result<Option<usize>> {
    if !path.is_file() {
        return Ok(None);
    }
    let v = read_json(path)?;
    Ok(match v.get("sample_size") {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as usize),
        Some(Value::Array(a)) => a.first().and_then(Value::as_u64).map(|n| n as usize),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheduler(json: &str) -> Result<SchedulerConfig> {
        let dir = std::env::temp_dir().join(format!("drt-sched-{}-{}", std::process::id(), json.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("scheduler_config.json");
        std::fs::write(&path, json).unwrap();
        let r = SchedulerConfig::read(&path);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn scheduler_classes_pick_their_sampler_and_keys() {
        let c = scheduler(
            r#"{"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "timestep_spacing": "trailing", "prediction_type": "v_prediction",
            "use_karras_sigmas": true, "interpolation_type": "linear", "trained_betas": null}"#,
        )
        .unwrap();
        assert_eq!((c.sampler, c.prediction, c.spacing), ("euler", "v_prediction", SigmaSpacing::Karras));
        assert_eq!(c.noise_schedule["timestep_spacing"], "trailing");
        assert!(c.noise_schedule.get("interpolation_type").is_none());
        let c = scheduler(r#"{"_class_name": "PNDMScheduler"}"#).unwrap();
        assert_eq!(c.sampler, FALLBACK_SAMPLER);
        let c = scheduler(r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}"#)
            .unwrap();
        assert_eq!(c.sampler, "dpmpp-2m-sde");
    }

    #[test]
    fn unsupported_scheduler_settings_are_refused() {
        for (json, needle) in [
            (r#"{"_class_name": "DDIMScheduler", "clip_sample": true}"#, "clip_sample"),
            (r#"{"thresholding": true}"#, "thresholding"),
            (r#"{"trained_betas": [0.1, 0.2]}"#, "trained_betas"),
            (r#"{"prediction_type": "flow"}"#, "prediction_type"),
            (r#"{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}"#, "solver_order"),
            ("[1, 2]", "object"),
            ("{", "EOF"),
        ] {
            let err = scheduler(json).err().unwrap_or_else(|| panic!("{json} accepted")).to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
