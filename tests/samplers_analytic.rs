//! Schedules and samplers against diffusers' own schedulers, with no network involved.
//!
//! `tests/fixtures/analytic/make_analytic_refs.py` ran diffusers 0.42.1's schedulers with an analytic
//! denoiser (the exact posterior mean of a Gaussian mixture) and recorded their grids, the noise they
//! drew and their final samples. Here the same mixture is implemented in Rust, the recorded noise is
//! replayed step by step, and the results must agree: final samples to 1e-4 relative L2 (the target
//! of design §5; a larger error is a bug, not rounding), grids to 1e-6.
//!
//! Run without the ONNX backends: `cargo test --no-default-features --test samplers_analytic -- --nocapture`.

use diffusion_rt::denoiser::{Denoiser, Level};
use diffusion_rt::rng::{Philox, RecordedNoise};
use diffusion_rt::sampler::{sampler_by_name, SamplerKind, SamplerOptions};
use diffusion_rt::schedule::{
    BetaSchedule, DiscreteSchedule, EdmSchedule, FinalSigmas, FlowSchedule, NoiseSchedule, SigmaSpacing,
    TimestepSpacing,
};
use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/analytic/analytic_refs.json");
const SAMPLE_TOL: f64 = 1e-4;
const GRID_TOL: f64 = 1e-6;

fn load() -> Value {
    let text = std::fs::read_to_string(FIXTURE).expect("fixture missing: run make_analytic_refs.py");
    serde_json::from_str(&text).expect("fixture is not JSON")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

/// Exact `E[x0 | x]` for `x = alpha x0 + sigma n` and a per-item isotropic Gaussian mixture.
struct Mixture {
    weights: Vec<f64>,
    means: Vec<Vec<f64>>,
    stds: Vec<f64>,
    len: usize,
    calls: usize,
}

impl Mixture {
    fn from_fixture(doc: &Value) -> Self {
        let m = &doc["mixture"];
        let len = f64s(&doc["shape"]).iter().product::<f64>() as usize;
        Mixture {
            weights: f64s(&m["weights"]),
            means: m["means"].as_array().unwrap().iter().map(f64s).collect(),
            stds: f64s(&m["stds"]),
            len,
            calls: 0,
        }
    }
}

impl Denoiser for Mixture {
    fn len(&self) -> usize {
        self.len
    }

    fn denoise(&mut self, x: &[f32], level: &Level, _step: usize, x0: &mut [f32]) -> diffusion_rt::Result<()> {
        self.calls += 1;
        let (a, s) = (level.alpha, level.sigma);
        let dim = self.means[0].len();
        for (xi, oi) in x.chunks(dim).zip(x0.chunks_mut(dim)) {
            let mut logp = Vec::with_capacity(self.weights.len());
            for k in 0..self.weights.len() {
                let var = a * a * self.stds[k] * self.stds[k] + s * s;
                let d2: f64 = xi.iter().zip(&self.means[k]).map(|(&x, &m)| (x as f64 - a * m).powi(2)).sum();
                logp.push(
                    self.weights[k].ln() - 0.5 * dim as f64 * (2.0 * std::f64::consts::PI * var).ln() - 0.5 * d2 / var,
                );
            }
            let max = logp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let r: Vec<f64> = logp.iter().map(|l| (l - max).exp()).collect();
            let total: f64 = r.iter().sum();
            for (j, o) in oi.iter_mut().enumerate() {
                let mut acc = 0.0;
                for (k, rk) in r.iter().enumerate() {
                    let var = a * a * self.stds[k] * self.stds[k] + s * s;
                    let m = self.means[k][j];
                    acc += rk / total * (m + a * self.stds[k] * self.stds[k] / var * (xi[j] as f64 - a * m));
                }
                *o = acc as f32;
            }
        }
        Ok(())
    }
}

fn noise_schedule(v: &Value) -> NoiseSchedule {
    let num = |k: &str, d: f64| v.get(k).and_then(Value::as_f64).unwrap_or(d);
    match v["type"].as_str().unwrap() {
        "discrete" => {
            let d = DiscreteSchedule::default();
            NoiseSchedule::Discrete(DiscreteSchedule {
                num_train_timesteps: num("num_train_timesteps", 1000.0) as usize,
                beta_start: num("beta_start", d.beta_start),
                beta_end: num("beta_end", d.beta_end),
                beta_schedule: BetaSchedule::from_name(v["beta_schedule"].as_str().unwrap()).unwrap(),
                timestep_spacing: v
                    .get("timestep_spacing")
                    .map(|s| TimestepSpacing::from_name(s.as_str().unwrap()).unwrap()),
                steps_offset: num("steps_offset", 0.0) as usize,
                set_alpha_to_one: v.get("set_alpha_to_one").and_then(Value::as_bool).unwrap_or(true),
                final_sigmas_type: v
                    .get("final_sigmas_type")
                    .map_or(FinalSigmas::Zero, |s| FinalSigmas::from_name(s.as_str().unwrap()).unwrap()),
                original_inference_steps: d.original_inference_steps,
            })
        }
        "edm" => NoiseSchedule::Edm(EdmSchedule {
            sigma_min: num("sigma_min", 0.002),
            sigma_max: num("sigma_max", 80.0),
            sigma_data: num("sigma_data", 0.5),
            rho: 7.0,
        }),
        "flow" => NoiseSchedule::Flow(FlowSchedule {
            num_train_timesteps: num("num_train_timesteps", 1000.0) as usize,
            shift: num("shift", 1.0),
        }),
        t => panic!("unknown schedule type {t}"),
    }
}

/// Our sampler for a diffusers scheduler name used by the fixture.
fn sampler_of(name: &str) -> SamplerKind {
    match name {
        "edm-euler" => SamplerKind::Euler,
        "flow-heun" => SamplerKind::Heun,
        n => sampler_by_name(n).unwrap(),
    }
}

struct Case<'a> {
    run: &'a Value,
    kind: SamplerKind,
    levels: Vec<Level>,
    scale: f64,
}

fn case(run: &Value) -> Case<'_> {
    let kind = sampler_of(run["sampler"].as_str().unwrap());
    let spacing =
        SigmaSpacing::from_name(run.get("sigma_spacing").and_then(Value::as_str).unwrap_or("default")).unwrap();
    let steps = run["steps"].as_u64().unwrap() as usize;
    let sched = kind.schedule(&noise_schedule(&run["schedule"]), steps, spacing).unwrap();
    Case { run, kind, levels: sched.levels().to_vec(), scale: sched.init_noise_scale() }
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
    }
}

/// Largest relative deviation of our levels from diffusers' grid: timesteps, and sigmas (k-diffusion,
/// EDM or flow) or `alphas_cumprod`, final level included.
fn grid_errors(c: &Case) -> (f64, f64) {
    let ts = f64s(&c.run["timesteps"]);
    assert_eq!(c.levels.len(), ts.len() + 1, "{}: level count", c.run["name"]);
    let schedule = noise_schedule(&c.run["schedule"]);
    // EDMEuler lists c_noise = ln(sigma) / 4 where our EDM levels carry sigma itself.
    let edm = matches!(schedule, NoiseSchedule::Edm(_));
    let ours_t = |l: &Level| {
        if edm {
            0.25 * l.timestep.ln()
        } else {
            l.timestep
        }
    };
    // Timesteps below 1 are compared absolutely (a relative error of a value near 0 says nothing).
    let t_err = ts.iter().zip(&c.levels).map(|(&t, l)| (ours_t(l) - t).abs() / t.abs().max(1.0)).fold(0.0, f64::max);
    let flow_or_edm = !matches!(schedule, NoiseSchedule::Discrete(_));
    let s_err = if let Some(acp) = c.run.get("alphas_cumprod") {
        let mut want = f64s(acp);
        want.push(c.run["final_alphas_cumprod"].as_f64().unwrap());
        want.iter().zip(&c.levels).map(|(&w, l)| rel(l.alpha * l.alpha, w)).fold(0.0, f64::max)
    } else {
        let want = f64s(&c.run["sigmas"]);
        assert_eq!(want.len(), c.levels.len(), "{}: sigma count", c.run["name"]);
        let ours = |l: &Level| {
            if flow_or_edm {
                l.sigma
            } else {
                l.sigma / l.alpha
            }
        };
        want.iter().zip(&c.levels).map(|(&w, l)| rel(ours(l), w)).fold(0.0, f64::max)
    };
    (t_err, s_err)
}

#[test]
fn grids_match_diffusers() {
    let doc = load();
    let runs = doc["runs"].as_array().unwrap();
    let (mut worst_t, mut worst_s) = ((0.0, String::new()), (0.0, String::new()));
    let mut failures = Vec::new();
    for run in runs {
        let name = run["name"].as_str().unwrap().to_string();
        let (t_err, s_err) = grid_errors(&case(run));
        if t_err > worst_t.0 {
            worst_t = (t_err, name.clone());
        }
        if s_err > worst_s.0 {
            worst_s = (s_err, name.clone());
        }
        if t_err > GRID_TOL || s_err > GRID_TOL {
            failures.push(format!("{name}: timestep {t_err:.2e}, sigma {s_err:.2e}"));
        }
    }
    eprintln!(
        "{} grids; worst timestep error {:.2e} ({}), worst sigma/alphas_cumprod error {:.2e} ({})",
        runs.len(),
        worst_t.0,
        worst_t.1,
        worst_s.0,
        worst_s.1
    );
    assert!(failures.is_empty(), "grids off by more than {GRID_TOL}:\n{}", failures.join("\n"));
}

#[test]
fn final_samples_match_diffusers() {
    let doc = load();
    let mut failures = Vec::new();
    let mut count = 0;
    for run in doc["runs"].as_array().unwrap().iter().filter(|r| r.get("final").is_some()) {
        count += 1;
        let c = case(run);
        let name = run["name"].as_str().unwrap();
        let mut den = Mixture::from_fixture(&doc);
        let unit = f32s(&run["init_noise"]);
        let mut x: Vec<f32> = unit.iter().map(|&n| (n as f64 * c.scale) as f32).collect();
        let draws = run["noise"].as_array().unwrap().iter().map(f32s).collect();
        let opts = SamplerOptions { eta: run.get("eta").and_then(Value::as_f64).unwrap_or(0.0), ..Default::default() };
        c.kind
            .sample(&mut den, &c.levels, &mut x, &mut RecordedNoise::new(draws), &mut |_, _| true, &opts)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = f64s(&run["final"]);
        let num: f64 = x.iter().zip(&want).map(|(&a, &b)| (a as f64 - b).powi(2)).sum();
        let den_norm: f64 = want.iter().map(|b| b * b).sum();
        let err = (num / den_norm).sqrt();
        eprintln!("{name:28} {:>13} rel L2 {err:.2e}  ({} denoiser calls)", c.kind.name(), den.calls);
        if err.is_nan() || err > SAMPLE_TOL {
            failures.push(format!("{name}: {err:.3e}"));
        }
    }
    assert!(count >= 40, "fixture has only {count} sampling runs");
    assert!(failures.is_empty(), "final samples off by more than {SAMPLE_TOL}:\n{}", failures.join("\n"));
}

#[test]
fn philox_normals_match_the_independent_python_reference() {
    let doc = load();
    for r in doc["philox_normals"].as_array().unwrap() {
        let seed = r["seed"].as_u64().unwrap();
        let (stream, first) = (r["stream"].as_u64().unwrap(), r["first"].as_u64().unwrap());
        let want = f32s(&r["normals"]);
        let mut got = vec![0.0f32; want.len()];
        Philox::new(seed).fill_normal(stream, first, &mut got);
        for (g, w) in got.iter().zip(&want) {
            // Python used the platform libm, we the pure-Rust one: allow the last f32 bit.
            assert!((g - w).abs() <= w.abs() * 2.0 * f32::EPSILON, "seed {seed} stream {stream}: {got:?} vs {want:?}");
        }
    }
}
