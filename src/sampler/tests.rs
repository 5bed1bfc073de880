//! Behaviour every sampler shares, checked on a point-mass denoiser (its `x0` is exact, so every
//! sampler must land on the point) and on misbehaving denoisers and callbacks.

use super::*;
use crate::denoiser::NoNoise;
use crate::error::Error;
use crate::rng::PhiloxNoise;
use crate::schedule::{DiscreteSchedule, EdmSchedule, FlowSchedule, NoiseSchedule, SigmaSpacing};

struct Point {
    target: Vec<f32>,
    calls: usize,
    poison_at: Option<usize>,
}

impl Denoiser for Point {
    fn len(&self) -> usize {
        self.target.len()
    }
    fn denoise(&mut self, _x: &[f32], _level: &Level, step: usize, x0: &mut [f32]) -> Result<()> {
        self.calls += 1;
        x0.copy_from_slice(&self.target);
        if self.poison_at == Some(step) {
            x0[0] = f32::NAN;
        }
        Ok(())
    }
}

fn point(n: usize) -> Point {
    Point { target: (0..n).map(|i| (i as f32 * 0.37).sin()).collect(), calls: 0, poison_at: None }
}

fn schedules() -> Vec<NoiseSchedule> {
    vec![
        NoiseSchedule::Discrete(DiscreteSchedule::default()),
        NoiseSchedule::Edm(EdmSchedule::default()),
        NoiseSchedule::Flow(FlowSchedule { num_train_timesteps: 1000, shift: 3.0 }),
    ]
}

#[test]
fn every_sampler_lands_on_a_point_mass() {
    for noise_schedule in schedules() {
        for kind in SamplerKind::ALL {
            let sched = kind.schedule(&noise_schedule, 8, SigmaSpacing::Default).unwrap();
            let mut den = point(12);
            let mut x = vec![0.0f32; 12];
            let mut rng = PhiloxNoise::new(1);
            let mut unit = vec![0.0f32; 12];
            rng.initial(&mut unit);
            sched.initial_sample(&unit, &mut x).unwrap();
            let mut seen = Vec::new();
            let mut progress = |done: usize, total: usize| {
                seen.push((done, total));
                true
            };
            // LCM's boundary condition reads `timestep` as a discrete index; off for EDM and flow.
            let mut opts = SamplerOptions::default();
            if !matches!(noise_schedule, NoiseSchedule::Discrete(_)) {
                opts.lcm_boundary = None;
            }
            kind.sample(&mut den, sched.levels(), &mut x, &mut rng, &mut progress, &opts).unwrap();
            let err = x.iter().zip(&den.target).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err < 1e-5, "{} on {noise_schedule:?}: max error {err}", kind.name());
            assert_eq!(seen, (1..=8).map(|d| (d, 8)).collect::<Vec<_>>());
            assert_eq!(den.calls, kind.evaluations(8), "{}", kind.name());
        }
    }
}

#[test]
fn cancel_stops_after_the_step_that_reported() {
    let sched = SamplerKind::Euler.schedule(&schedules()[0], 10, SigmaSpacing::Default).unwrap();
    for kind in SamplerKind::ALL {
        let mut den = point(4);
        let mut x = vec![0.5f32; 4];
        let mut cancel = |done: usize, _: usize| done < 3;
        let err = kind
            .sample(&mut den, sched.levels(), &mut x, &mut PhiloxNoise::new(0), &mut cancel, &SamplerOptions::default())
            .unwrap_err();
        assert!(matches!(err, Error::Cancelled { step: 3 }), "{}: {err}", kind.name());
    }
}

#[test]
fn non_finite_prediction_names_the_step() {
    let sched = SamplerKind::Euler.schedule(&schedules()[0], 10, SigmaSpacing::Default).unwrap();
    for kind in SamplerKind::ALL {
        let mut den = point(4);
        den.poison_at = Some(4);
        let mut x = vec![0.5f32; 4];
        let err = kind
            .sample(
                &mut den,
                sched.levels(),
                &mut x,
                &mut PhiloxNoise::new(0),
                &mut |_, _| true,
                &SamplerOptions::default(),
            )
            .unwrap_err();
        assert!(matches!(err, Error::NonFinite { step: 4 }), "{}: {err}", kind.name());
    }
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let sched = SamplerKind::Euler.schedule(&schedules()[0], 4, SigmaSpacing::Default).unwrap();
    let good = sched.levels();
    let clean_start =
        [Level { alpha: 1.0, sigma: 0.0, timestep: 0.0 }, Level { alpha: 1.0, sigma: 0.0, timestep: 0.0 }];
    let nan_level = [Level { alpha: f64::NAN, sigma: 1.0, timestep: 0.0 }, good[4]];
    for kind in SamplerKind::ALL {
        let opts = SamplerOptions::default();
        let run = |levels: &[Level], x: &mut [f32], n: usize| {
            let mut den = point(n);
            kind.sample(&mut den, levels, x, &mut PhiloxNoise::new(0), &mut |_, _| true, &opts)
        };
        assert!(matches!(run(good, &mut [0.0; 3], 4), Err(Error::InvalidArgument(_))), "{}", kind.name());
        assert!(matches!(run(&good[..1], &mut [0.0; 4], 4), Err(Error::InvalidArgument(_))));
        assert!(matches!(run(&clean_start, &mut [0.0; 4], 4), Err(Error::InvalidArgument(_))));
        assert!(matches!(run(&nan_level, &mut [0.0; 4], 4), Err(Error::InvalidArgument(_))));
        assert!(matches!(run(good, &mut [f32::INFINITY, 0.0, 0.0, 0.0], 4), Err(Error::InvalidArgument(_))));
    }
    let mut den = point(4);
    let opts = SamplerOptions { eta: -1.0, ..SamplerOptions::default() };
    let err = SamplerKind::Ddim.sample(&mut den, good, &mut [0.0; 4], &mut NoNoise, &mut |_, _| true, &opts);
    assert!(matches!(err, Err(Error::InvalidArgument(_))));
}

/// Counts draws and records the step of each.
struct Counting(Vec<usize>);

impl NoiseSource for Counting {
    fn fill(&mut self, step: usize, out: &mut [f32]) -> Result<()> {
        self.0.push(step);
        out.fill(0.0);
        Ok(())
    }
}

#[test]
fn stochastic_samplers_draw_once_per_noisy_step() {
    let n = schedules().remove(0);
    for kind in SamplerKind::ALL {
        let sched = kind.schedule(&n, 6, SigmaSpacing::Default).unwrap();
        let mut draws = Counting(Vec::new());
        let mut x = vec![0.1f32; 3];
        kind.sample(&mut point(3), sched.levels(), &mut x, &mut draws, &mut |_, _| true, &SamplerOptions::default())
            .unwrap();
        let want: Vec<usize> = if kind.is_stochastic(&SamplerOptions::default()) { (0..5).collect() } else { vec![] };
        assert_eq!(draws.0, want, "{}", kind.name());
    }
}

#[test]
fn unknown_sampler_lists_valid_names() {
    assert_eq!(sampler_by_name("dpmpp-2m").unwrap(), SamplerKind::DpmPp2m);
    let err = sampler_by_name("dpm++").unwrap_err().to_string();
    for k in SamplerKind::ALL {
        assert!(err.contains(k.name()), "{err}");
        assert_eq!(sampler_by_name(k.name()).unwrap(), k);
        assert!(!k.description().is_empty());
    }
}
