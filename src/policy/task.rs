//! The point-robot task the shipped policy is trained on (`task.json`, schema
//! `diffusion-rt.point-task/1`): a point in the plane starts near the origin and must reach a goal
//! straight ahead without touching a disk between them, passing it on the left or on the right.
//!
//! An action is a velocity in units of `max_speed`, each component clipped to [-1, 1]; the robot
//! moves by `max_speed` times it per control step. An episode ends on reaching the goal (success),
//! on entering the disk (collision) or after `max_steps` steps (timeout).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Philox;

pub const SCHEMA: &str = "diffusion-rt.point-task/1";

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Range2 {
    pub x: [f64; 2],
    pub y: [f64; 2],
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PointTask {
    pub schema: String,
    /// Where episodes start, uniformly.
    pub start: Range2,
    pub goal: [f64; 2],
    pub goal_radius: f64,
    pub obstacle: [f64; 2],
    pub obstacle_radius: f64,
    pub max_speed: f64,
    pub max_steps: usize,
    /// Actions per chunk the policy plans, and how many of them run before it plans again.
    pub horizon: usize,
    pub execute: usize,
}

/// How an episode ended, or that it goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Success,
    Collision,
    Timeout,
}

/// The side of the obstacle an episode passed on: the sign of x where the path first reached the
/// obstacle's height.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Left,
    Right,
}

impl PointTask {
    pub fn load(path: &Path) -> Result<PointTask> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        PointTask::parse(&text).map_err(|e| e.map_message(|m| format!("{}: {m}", path.display())))
    }

    pub fn parse(text: &str) -> Result<PointTask> {
        let t: PointTask = serde_json::from_str(text).map_err(|e| Error::Manifest(e.to_string()))?;
        let bad = |key: &str, why: &str| Err(Error::Manifest(format!("key `{key}`: {why}")));
        if t.schema != SCHEMA {
            return bad("schema", &format!("unsupported schema {:?}; this runtime reads {SCHEMA:?}", t.schema));
        }
        let finite = [t.goal, t.obstacle, t.start.x, t.start.y].iter().flatten().all(|v| v.is_finite());
        if !finite {
            return bad("goal", "positions must be finite");
        }
        if t.start.x[0] > t.start.x[1] || t.start.y[0] > t.start.y[1] {
            return bad("start", "each range must be [lo, hi] with lo <= hi");
        }
        for (key, v) in
            [("goal_radius", t.goal_radius), ("obstacle_radius", t.obstacle_radius), ("max_speed", t.max_speed)]
        {
            if !(v.is_finite() && v > 0.0) {
                return bad(key, &format!("must be a positive number, got {v}"));
            }
        }
        if !(1..=100_000).contains(&t.max_steps) {
            return bad("max_steps", &format!("must be between 1 and 100000, got {}", t.max_steps));
        }
        if t.horizon == 0 || t.execute == 0 || t.execute > t.horizon {
            return bad("execute", &format!("need 1 <= execute <= horizon, got {} and {}", t.execute, t.horizon));
        }
        Ok(t)
    }

    /// A fresh episode; `episode` picks its start from `seed`'s stream of uniforms.
    pub fn reset(&self, seed: u64, episode: u64) -> Episode {
        let w = Philox::new(seed).block(episode, 0);
        let u = |k: usize, [lo, hi]: [f64; 2]| lo + (hi - lo) * (w[k] as f64 / 4_294_967_296.0);
        Episode { position: [u(0, self.start.x), u(1, self.start.y)], steps: 0, outcome: Outcome::Running, side: None }
    }

    /// Moves `e` by `action` (one control step); returns the outcome so far.
    pub fn step(&self, e: &mut Episode, action: [f32; 2]) -> Outcome {
        if e.outcome != Outcome::Running {
            return e.outcome;
        }
        let before = e.position;
        for (p, a) in e.position.iter_mut().zip(action) {
            // NaN (a broken network) stands still rather than teleporting.
            let a = if a.is_nan() { 0.0 } else { (a as f64).clamp(-1.0, 1.0) };
            *p += self.max_speed * a;
        }
        e.steps += 1;
        let [x, y] = e.position;
        if e.side.is_none() && before[1] < self.obstacle[1] && y >= self.obstacle[1] {
            e.side = Some(if x < self.obstacle[0] { Side::Left } else { Side::Right });
        }
        let dist = |c: [f64; 2]| ((x - c[0]).powi(2) + (y - c[1]).powi(2)).sqrt();
        e.outcome = if dist(self.obstacle) < self.obstacle_radius {
            Outcome::Collision
        } else if dist(self.goal) < self.goal_radius {
            Outcome::Success
        } else if e.steps >= self.max_steps {
            Outcome::Timeout
        } else {
            Outcome::Running
        };
        e.outcome
    }
}

/// One episode's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    pub position: [f64; 2],
    pub steps: usize,
    pub outcome: Outcome,
    pub side: Option<Side>,
}

impl Episode {
    /// What the policy sees: the position, as the network's float32 input.
    pub fn observation(&self) -> [f32; 2] {
        [self.position[0] as f32, self.position[1] as f32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = include_str!("../../models/point-policy/task.json");

    /// Steers at full speed towards each target in turn.
    fn drive(task: &PointTask, e: &mut Episode, targets: &[[f64; 2]]) -> Outcome {
        let mut k = 0;
        while e.outcome == Outcome::Running {
            let [tx, ty] = targets[k.min(targets.len() - 1)];
            let (dx, dy) = (tx - e.position[0], ty - e.position[1]);
            let n = (dx * dx + dy * dy).sqrt();
            if n < task.max_speed && k + 1 < targets.len() {
                k += 1;
            }
            // The step towards the target, at most max_speed long, in units of max_speed.
            let s = n.min(task.max_speed) / n.max(1e-12) / task.max_speed;
            task.step(e, [(dx * s) as f32, (dy * s) as f32]);
        }
        e.outcome
    }

    #[test]
    fn going_round_either_side_succeeds_and_straight_on_collides() {
        let task = PointTask::parse(TASK).expect("task.json");
        for episode in 0..20 {
            let start = task.reset(7, episode);
            let [sx, sy] = start.position;
            assert!((-0.05..=0.05).contains(&sx) && (-0.05..=0.05).contains(&sy), "{start:?}");
            for (dx, side) in [(-0.35, Side::Left), (0.35, Side::Right)] {
                let mut e = start.clone();
                assert_eq!(drive(&task, &mut e, &[[dx, 0.5], task.goal]), Outcome::Success, "{e:?}");
                assert_eq!(e.side, Some(side));
                assert!(e.steps < task.max_steps);
            }
            let mut e = start.clone();
            assert_eq!(drive(&task, &mut e, &[task.goal]), Outcome::Collision);
        }
        assert_ne!(task.reset(7, 0), task.reset(7, 1));
        assert_eq!(task.reset(7, 3), task.reset(7, 3));
    }

    #[test]
    fn standing_still_times_out_and_broken_actions_do_not_move() {
        let task = PointTask::parse(TASK).expect("task.json");
        let mut e = task.reset(0, 0);
        let start = e.position;
        while task.step(&mut e, [f32::NAN, 0.0]) == Outcome::Running {}
        assert_eq!((e.outcome, e.steps, e.position), (Outcome::Timeout, task.max_steps, start));
        let mut fast = task.reset(0, 0);
        task.step(&mut fast, [100.0, 0.0]);
        assert!((fast.position[0] - start[0] - task.max_speed).abs() < 1e-12, "actions are clipped to 1");
    }

    #[test]
    fn bad_task_files_name_the_key() {
        for (from, to, needle) in [
            ("\"max_speed\": 0.05", "\"max_speed\": -1", "max_speed"),
            ("\"execute\": 8", "\"execute\": 17", "execute"),
            ("\"goal_radius\"", "\"goal_radius_\"", "goal_radius_"),
            ("point-task/1", "point-task/2", "schema"),
        ] {
            let err = PointTask::parse(&TASK.replace(from, to)).expect_err(needle).to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
