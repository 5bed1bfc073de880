//! No heap allocation per step outside the backend: a counting global allocator watches every
//! step of caller-driven generations (every sampler, guided, on both backends), and only the time
//! inside the backend's run call is excluded. Everything of ours (sampler, guidance, the network
//! adapters, noise) must run on buffers set up by `begin`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{backends, model_dir, options};
use diffusion_rt::backend::{load_graph, BackendKind, ExecutionProvider, Graph, Input, IoInfo, Runner};
use diffusion_rt::cache::{CacheMode, CacheOptions};
use diffusion_rt::guidance::GuidanceRules;
use diffusion_rt::sampler::sampler_names;
use diffusion_rt::{GenerateParams, Model, Session};

struct Counting;

thread_local! {
    /// Set on the thread whose allocations are counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Set while that thread is inside the backend.
    static IN_BACKEND: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn note() {
    let counted = COUNTING.try_with(Cell::get).unwrap_or(false) && !IN_BACKEND.try_with(Cell::get).unwrap_or(true);
    if counted {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A graph whose runners mark the time spent inside the backend.
struct Marked(Arc<dyn Graph>);
struct MarkedRunner(Box<dyn Runner>);

impl Graph for Marked {
    fn inputs(&self) -> &[IoInfo] {
        self.0.inputs()
    }
    fn outputs(&self) -> &[IoInfo] {
        self.0.outputs()
    }
    fn runner(&self) -> diffusion_rt::Result<Box<dyn Runner>> {
        Ok(Box::new(MarkedRunner(self.0.runner()?)))
    }
    fn backend(&self) -> BackendKind {
        self.0.backend()
    }
    fn execution_provider(&self) -> ExecutionProvider {
        self.0.execution_provider()
    }
}

impl Runner for MarkedRunner {
    fn run(&mut self, inputs: &[Input<'_>], output: usize, out: &mut [f32]) -> diffusion_rt::Result<Vec<usize>> {
        IN_BACKEND.with(|f| f.set(true));
        let result = self.0.run(inputs, output, out);
        IN_BACKEND.with(|f| f.set(false));
        result
    }
}

/// Allocations outside the backend during all the steps of one generation.
fn allocations_while_stepping(session: &mut Session, params: &GenerateParams) -> usize {
    let total = session.begin(params).expect("begin");
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    for _ in 0..total {
        session.step().expect("step");
    }
    COUNTING.with(|c| c.set(false));
    let n = ALLOCATIONS.load(Ordering::SeqCst);
    session.finish().expect("finish");
    n
}

#[test]
fn steps_allocate_nothing_outside_the_backend() {
    let dir = model_dir("digits");
    for backend in backends() {
        let graph = load_graph(&dir.join("denoiser.onnx"), &options(backend)).expect("graph");
        let model = Arc::new(Model::from_graph(&dir, Arc::new(Marked(graph))).expect("model"));
        let mut session = Session::new(&model).expect("session");
        for sampler in sampler_names() {
            if sampler == "flow-euler" {
                continue; // needs a flow schedule; the same first-order stepper as euler
            }
            for guidance in [1.0, 3.0] {
                let params = GenerateParams {
                    sampler: Some(sampler.into()),
                    steps: Some(6),
                    guidance: Some(guidance),
                    batch: 2,
                    classes: vec![1, 7],
                    seed: 5,
                    ..GenerateParams::default()
                };
                let n = allocations_while_stepping(&mut session, &params);
                assert_eq!(n, 0, "{backend:?} {sampler} guidance {guidance}: {n} allocations in 6 steps");
                // Guidance rules switch the network batch between 2B and B mid-run.
                let rules = GuidanceRules { adaptive: Some(0.5), interval: Some((0.0, 30.0)) };
                let cache = Some(CacheOptions { threshold: 1e9, ..CacheOptions::new(CacheMode::AdamsBashforth) });
                let n = allocations_while_stepping(
                    &mut session,
                    &GenerateParams { guidance_rules: rules, step_cache: cache, ..params },
                );
                assert_eq!(
                    n, 0,
                    "{backend:?} {sampler} guidance {guidance} with rules and the cache: {n} allocations in 6 steps"
                );
            }
        }
        // The counter does see allocations of ours: a step that builds a Vec counts.
        COUNTING.with(|c| c.set(true));
        ALLOCATIONS.store(0, Ordering::SeqCst);
        let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(16));
        COUNTING.with(|c| c.set(false));
        drop(v);
        assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 1, "the counting allocator counts");
    }
}
