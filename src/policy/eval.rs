//! Closed-loop evaluation of a policy on the point task: the simulator steps in Rust, the policy
//! plans an action chunk from each observation through a [`Session`], the first `execute` actions
//! run, and it plans again (receding horizon, as in Diffusion Policy).
//!
//! With a warm start, every plan after an episode's first begins from the previous plan shifted by
//! the executed actions (its tail repeating the last action), noised to the level a fraction
//! `warm_start` of the schedule from the end, and runs only the remaining steps: img2img on the
//! action chunk.

use std::time::Instant;

use serde::Serialize;

use super::task::{Outcome, PointTask, Side};
use crate::bench::quantile;
use crate::error::{Error, Result};
use crate::pipeline::Session;
use crate::request::GenerateParams;

/// How a policy is evaluated.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    pub episodes: usize,
    pub seed: u64,
    /// Each plan's request (sampler, steps, guidance); the batch, observation, noise seed and
    /// warm start are set here.
    pub params: GenerateParams,
    /// The fraction of the schedule a warm-started plan runs, in (0, 1]; `None` = every plan
    /// starts from noise.
    pub warm_start: Option<f32>,
    /// Actions run per plan; `None` = the task's `execute`.
    pub execute: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PolicyReport {
    pub model: String,
    pub backend: String,
    pub sampler: String,
    pub steps: usize,
    pub warm_start: Option<f32>,
    pub execute: usize,
    pub episodes: usize,
    pub success_rate: f64,
    pub collisions: usize,
    pub timeouts: usize,
    /// Of the successful episodes, the share that passed the obstacle on each side.
    pub left_share: f64,
    pub right_share: f64,
    pub mean_episode_steps: f64,
    pub plans: usize,
    /// Network passes per plan, and per control step (a plan serves `execute` steps).
    pub passes_per_plan: f64,
    pub passes_per_control_step: f64,
    /// Wall time of one plan (the request check, the sampler and every network pass), batch 1.
    pub plan_us_p50: f64,
    pub plan_us_p90: f64,
    pub plan_us_p99: f64,
    pub plan_us_max: f64,
}

/// Runs `opts.episodes` episodes of `task` with the policy behind `session`.
pub fn evaluate(session: &mut Session, task: &PointTask, opts: &EvalOptions) -> Result<PolicyReport> {
    let model = std::sync::Arc::clone(session.model());
    let m = model.manifest();
    let obs_name = match model.tensor_inputs().collect::<Vec<_>>().as_slice() {
        [(name, shape, 2)] if shape == &[2] => name.to_string(),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "model `{}` is not a point-task policy: it needs one tensor input of shape [2] (the position)",
                m.name
            )))
        }
    };
    if m.sample_shape != [task.horizon, 2] {
        return Err(Error::InvalidArgument(format!(
            "model `{}` plans chunks of {:?}; the task needs [horizon {}, 2]",
            m.name, m.sample_shape, task.horizon
        )));
    }
    let execute = opts.execute.unwrap_or(task.execute);
    if !(1..=task.horizon).contains(&execute) {
        return Err(Error::InvalidArgument(format!("execute must be between 1 and {}, got {execute}", task.horizon)));
    }
    if let Some(f) = opts.warm_start {
        if !(f > 0.0 && f <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "warm start must be a fraction of the schedule in (0, 1], got {f}"
            )));
        }
    }
    if opts.episodes == 0 {
        return Err(Error::InvalidArgument("episodes must be at least 1".into()));
    }
    let mut params = GenerateParams { batch: 1, ..opts.params.clone() };
    let mut times = Vec::new();
    let (mut passes, mut steps_total) = (0usize, 0usize);
    let (mut successes, mut collisions, mut timeouts, mut left) = (0usize, 0usize, 0usize, 0usize);
    let (mut plan_steps, mut sampler) = (0, String::new());
    // One plan before timing: the first run of a session sets up buffers.
    params.tensors = vec![(obs_name.clone(), task.reset(opts.seed, 0).observation().to_vec())];
    session.generate(&params, &mut |_, _| true)?;
    for episode in 0..opts.episodes as u64 {
        let mut e = task.reset(opts.seed, episode);
        let mut previous: Option<Vec<f32>> = None;
        let mut plan = 0u64;
        while e.outcome == Outcome::Running {
            params.tensors = vec![(obs_name.clone(), e.observation().to_vec())];
            params.seed = opts.seed.wrapping_mul(1_000_003).wrapping_add(episode << 20 | plan);
            (params.init, params.strength) = match (&previous, opts.warm_start) {
                (Some(p), Some(f)) => (Some(shifted(p, execute)), Some(f)),
                _ => (None, None),
            };
            let started = Instant::now();
            let g = session.generate(&params, &mut |_, _| true)?;
            times.push(started.elapsed().as_secs_f64() * 1e6);
            passes += g.nfe;
            plan_steps = plan_steps.max(g.steps);
            sampler = g.sampler.name().to_string();
            for a in g.samples.chunks_exact(2).take(execute) {
                if task.step(&mut e, [a[0], a[1]]) != Outcome::Running {
                    break;
                }
            }
            previous = Some(g.samples);
            plan += 1;
        }
        steps_total += e.steps;
        match e.outcome {
            Outcome::Success => {
                successes += 1;
                left += usize::from(e.side == Some(Side::Left));
            }
            Outcome::Collision => collisions += 1,
            _ => timeouts += 1,
        }
    }
    let share = |n: usize| if successes == 0 { 0.0 } else { n as f64 / successes as f64 };
    let plans = times.len();
    Ok(PolicyReport {
        model: m.name.clone(),
        backend: format!("{} [{}]", model.graph().backend_name(), model.graph().execution_provider()),
        sampler,
        steps: plan_steps,
        warm_start: opts.warm_start,
        execute,
        episodes: opts.episodes,
        success_rate: successes as f64 / opts.episodes as f64,
        collisions,
        timeouts,
        left_share: share(left),
        right_share: share(successes - left),
        mean_episode_steps: steps_total as f64 / opts.episodes as f64,
        plans,
        passes_per_plan: passes as f64 / plans as f64,
        passes_per_control_step: passes as f64 / steps_total.max(1) as f64,
        plan_us_p50: quantile(&times, 0.5),
        plan_us_p90: quantile(&times, 0.9),
        plan_us_p99: quantile(&times, 0.99),
        plan_us_max: times.iter().copied().fold(0.0, f64::max),
    })
}

/// The previous chunk with its first `execute` actions dropped and its last action repeated in
/// their place at the end.
fn shifted(previous: &[f32], execute: usize) -> Vec<f32> {
    let rest = &previous[(2 * execute).min(previous.len())..];
    let last: [f32; 2] = match previous {
        [.., x, y] => [*x, *y],
        _ => [0.0, 0.0],
    };
    let mut out = rest.to_vec();
    while out.len() < previous.len() {
        out.extend_from_slice(&last);
    }
    out
}

impl PolicyReport {
    /// The report as `drt policy-eval` prints it.
    pub fn table(&self) -> String {
        let warm = self.warm_start.map_or("off".to_string(), |f| format!("{f} of the schedule per plan"));
        let rows = [
            ("model", self.model.clone()),
            ("backend", self.backend.clone()),
            ("sampler", format!("{}, {} steps, warm start {warm}", self.sampler, self.steps)),
            ("episodes", format!("{} ({} actions run per plan)", self.episodes, self.execute)),
            ("success", format!("{:.1} %", 100.0 * self.success_rate)),
            ("failures", format!("{} collisions, {} timeouts", self.collisions, self.timeouts)),
            ("sides", format!("{:.1} % left, {:.1} % right", 100.0 * self.left_share, 100.0 * self.right_share)),
            (
                "passes",
                format!("{:.2} per plan, {:.3} per control step", self.passes_per_plan, self.passes_per_control_step),
            ),
            (
                "plan time",
                format!(
                    "p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs ({} plans)",
                    self.plan_us_p50, self.plan_us_p90, self.plan_us_p99, self.plan_us_max, self.plans
                ),
            ),
        ];
        rows.iter().map(|(k, v)| format!("{k:<10} {v}\n")).collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::shifted;

    #[test]
    fn a_shifted_plan_drops_the_executed_actions_and_repeats_the_last() {
        let plan = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(shifted(&plan, 1), [3.0, 4.0, 5.0, 6.0, 5.0, 6.0]);
        assert_eq!(shifted(&plan, 3), [5.0, 6.0, 5.0, 6.0, 5.0, 6.0]);
    }
}
