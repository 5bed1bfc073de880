//! float16 inputs fed as float32: every graph a backend loads is wrapped here, so the callers
//! (the denoiser's network, the VAE, the encoders) hand over float32 values whatever the graph
//! declares, and the values are rounded to float16 once, in one place, as outputs are widened
//! to float32 once by each backend's output copy. The buffers are the runner's own and reused,
//! so a step allocates nothing here.

use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;
use smallvec::SmallVec;

use super::{BackendKind, DType, ExecutionProvider, Graph, Input, InputData, IoInfo, Runner};
use crate::error::Result;

/// A graph whose runners narrow float32 values given to float16 inputs.
pub(super) struct Narrowing(pub(super) Arc<dyn Graph>);

impl Graph for Narrowing {
    fn inputs(&self) -> &[IoInfo] {
        self.0.inputs()
    }

    fn outputs(&self) -> &[IoInfo] {
        self.0.outputs()
    }

    fn runner(&self) -> Result<Box<dyn Runner>> {
        let half: Vec<bool> = self.0.inputs().iter().map(|i| i.dtype == DType::F16).collect();
        let inner = self.0.runner()?;
        if !half.contains(&true) {
            return Ok(inner);
        }
        Ok(Box::new(NarrowingRunner { inner, half, buffers: Vec::new() }))
    }

    fn backend(&self) -> BackendKind {
        self.0.backend()
    }

    fn execution_provider(&self) -> ExecutionProvider {
        self.0.execution_provider()
    }

    fn threads(&self) -> usize {
        self.0.threads()
    }
}

struct NarrowingRunner {
    inner: Box<dyn Runner>,
    /// By input index: the graph takes float16.
    half: Vec<bool>,
    /// One buffer per input given, reused from call to call.
    buffers: Vec<Vec<f16>>,
}

impl Runner for NarrowingRunner {
    fn run(&mut self, inputs: &[Input<'_>], output: usize, out: &mut [f32]) -> Result<Vec<usize>> {
        self.buffers.resize_with(self.buffers.len().max(inputs.len()), Vec::new);
        for (input, buf) in inputs.iter().zip(self.buffers.iter_mut()) {
            if let (InputData::F32(v), Some(true)) = (input.data, self.half.get(input.index)) {
                buf.resize(v.len(), f16::ZERO);
                buf.convert_from_f32_slice(v);
            }
        }
        let narrowed: SmallVec<[Input<'_>; 8]> = inputs
            .iter()
            .zip(&self.buffers)
            .map(|(input, buf)| match (input.data, self.half.get(input.index)) {
                (InputData::F32(_), Some(true)) => Input { data: InputData::F16(buf), ..*input },
                _ => *input,
            })
            .collect();
        self.inner.run(&narrowed, output, out)
    }

    fn release_after_run(&mut self, on: bool) {
        self.inner.release_after_run(on);
    }
}
