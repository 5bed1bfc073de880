//! Diffusion policies in the loop: the point-robot task the shipped policy was trained on
//! ([`task`]), and its closed-loop evaluation with receding-horizon replanning and warm starts
//! ([`eval`]).

pub mod eval;
pub mod task;

pub use eval::{evaluate, EvalOptions, PolicyReport};
pub use task::PointTask;
