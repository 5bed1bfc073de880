//! Where tract spends a denoiser call, by operator: the evidence behind the note in docs/design.md on tract's
//! speed. A measurement, not a check:
//!
//!   cargo bench --bench tract_profile
//!
//! Runs the digits denoiser (or `$DRT_PROFILE_MODEL`) optimised as the tract backend loads it, at
//! batch 2 (one guided sample), and prints the time per operator type over 200 calls. With
//! `DRT_PROFILE_CONCRETE=1` the batch symbol is fixed to 2 before optimisation, to measure what a
//! plan per batch size would gain.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::eval;

fn main() -> TractResult<()> {
    let digits = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits");
    let dir = std::env::var_os("DRT_PROFILE_MODEL").map_or(digits, Into::into);
    let typed = tract_onnx::onnx().model_for_path(dir.join("denoiser.onnx"))?.into_typed()?;
    let model = if std::env::var_os("DRT_PROFILE_CONCRETE").is_some() {
        let syms: Vec<_> = typed.symbols.all_symbols();
        let subs = syms.into_iter().map(|s| (s, TDim::Val(2))).collect();
        typed.set_symbols(&subs)?.into_optimized()?
    } else {
        typed.into_optimized()?
    };
    let plan = TypedSimplePlan::new(model)?;
    let mut state = plan.spawn()?;
    let batch = 2;
    let inputs: TVec<TValue> = tvec![
        Tensor::from_shape(&[batch, 1, 16, 16], &vec![0.1f32; batch * 256])?.into(),
        Tensor::from_shape(&[batch], &vec![500f32; batch])?.into(),
        Tensor::from_shape(&[batch], &[3i64, 10])?.into(),
    ];
    for _ in 0..20 {
        state.run(inputs.clone())?;
    }
    let mut per_op: HashMap<String, (Duration, usize)> = HashMap::new();
    let calls = 200;
    let started = Instant::now();
    for _ in 0..calls {
        state.run_plan_with_eval(inputs.clone(), |ctx, op_state, node, node_inputs| {
            let t = Instant::now();
            let out = eval(ctx, op_state, node, node_inputs);
            let e = per_op.entry(node.op().name().to_string()).or_default();
            e.0 += t.elapsed();
            e.1 += 1;
            out
        })?;
    }
    let wall = started.elapsed();
    let mut rows: Vec<_> = per_op.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    let total: Duration = rows.iter().map(|r| r.1 .0).sum();
    println!(
        "tract per call at batch {batch}: {:.3} ms wall, {:.3} ms in operators",
        wall.as_secs_f64() * 1e3 / calls as f64,
        total.as_secs_f64() * 1e3 / calls as f64
    );
    println!("{:<28} {:>10} {:>8} {:>7}", "operator", "ms/call", "nodes", "share");
    for (op, (t, n)) in rows.iter().take(20) {
        println!(
            "{op:<28} {:>10.4} {:>8} {:>6.1}%",
            t.as_secs_f64() * 1e3 / calls as f64,
            n / calls,
            100.0 * t.as_secs_f64() / total.as_secs_f64()
        );
    }
    Ok(())
}
