//! Concurrency and cancellation: one model shared by eight generating threads gives each the
//! sequential result bit for bit; a cancel from another thread stops the run within one step and
//! leaves the session as good as new; loading models while others generate, and freeing sessions
//! and the model handle while another session still runs, are defined and harmless.

mod common;

use std::ffi::CString;
use std::ptr::{null, null_mut};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Barrier};

use common::{backends, load, model_dir};
use diffusion_rt::ffi::*;
use diffusion_rt::{Error, GenerateParams, Model, Session};

fn params(k: u64) -> GenerateParams {
    GenerateParams {
        sampler: Some(["dpmpp-2m", "euler-a", "dpmpp-2m-sde", "heun"][k as usize % 4].into()),
        steps: Some(6),
        batch: 2,
        classes: vec![(k % 10) as i64, ((k + 3) % 10) as i64],
        seed: 1000 + k,
        ..GenerateParams::default()
    }
}

fn generate(model: &Arc<Model>, p: &GenerateParams) -> Vec<f32> {
    Session::new(model).expect("session").generate(p, &mut |_, _| true).expect("generate").samples
}

#[test]
fn eight_threads_equal_the_sequential_runs() {
    for backend in backends() {
        let model = load(&model_dir("digits"), backend);
        let sequential: Vec<Vec<f32>> = (0..8).map(|k| generate(&model, &params(k))).collect();
        let start = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8u64)
            .map(|k| {
                let (model, start) = (Arc::clone(&model), Arc::clone(&start));
                std::thread::spawn(move || {
                    let mut session = Session::new(&model).expect("session");
                    start.wait();
                    // Twice on the same session: state left by one run must not leak into the next.
                    let first = session.generate(&params(k), &mut |_, _| true).expect("generate").samples;
                    let second = session.generate(&params(k), &mut |_, _| true).expect("generate").samples;
                    assert!(first == second, "{backend:?} thread {k}: a session's second run differs");
                    first
                })
            })
            .collect();
        for (k, h) in handles.into_iter().enumerate() {
            assert!(
                h.join().expect("thread") == sequential[k],
                "{backend:?} thread {k} differs from the sequential run"
            );
        }
    }
}

/// The progress callback hands control to another thread, which cancels; the run must stop before
/// the next step, and the same session must then reproduce a fresh session's result.
#[test]
fn cancel_from_another_thread_stops_within_a_step() {
    for backend in backends() {
        let model = load(&model_dir("digits"), backend);
        let mut session = Session::new(&model).expect("session");
        let flag = session.cancel_flag();
        let (to_canceller, requests) = mpsc::channel::<()>();
        let (acks, from_canceller) = mpsc::channel::<()>();
        let canceller = std::thread::spawn(move || {
            for () in requests {
                flag.store(true, Ordering::SeqCst);
                acks.send(()).expect("ack");
            }
        });
        for cancel_after in [1usize, 3, 5] {
            let mut seen = 0;
            let err = session
                .generate(&params(7), &mut |done, _| {
                    seen = done;
                    if done == cancel_after {
                        to_canceller.send(()).expect("ask");
                        from_canceller.recv().expect("ack");
                    }
                    true
                })
                .expect_err("cancelled");
            assert!(matches!(err, Error::Cancelled { step } if step == cancel_after), "{backend:?}: {err}");
            assert_eq!(seen, cancel_after, "{backend:?}: no step ran after the cancel");
            let again = session.generate(&params(7), &mut |_, _| true).expect("usable after a cancel").samples;
            assert!(again == generate(&model, &params(7)), "{backend:?}: differs from a fresh session after a cancel");
        }
        drop(to_canceller);
        canceller.join().expect("canceller");

        // A cancel at an arbitrary moment from a free-running thread: the run ends cancelled, at
        // most one step after the last step the callback saw before the flag was set. The
        // callback holds the run before its last steps until the flag is set (a handshake, so a
        // slow canceller thread cannot let the run finish first).
        let flag = session.cancel_flag();
        let is_set = session.cancel_flag();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen_by_canceller = Arc::clone(&seen);
        let t = std::thread::spawn(move || {
            while seen_by_canceller.load(Ordering::SeqCst) < 2 {
                std::thread::yield_now();
            }
            let at = seen_by_canceller.load(Ordering::SeqCst);
            flag.store(true, Ordering::SeqCst);
            at
        });
        let long = GenerateParams { steps: Some(200), ..params(2) };
        let err = session.generate(&long, &mut |done, total| {
            seen.store(done, Ordering::SeqCst);
            while done + 10 >= total && !is_set.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            true
        });
        let at = t.join().expect("canceller");
        match err {
            Err(Error::Cancelled { step }) => {
                assert!(step <= at + 1 && step >= at, "{backend:?}: flag set after step {at}, stopped at {step}")
            }
            other => panic!("{backend:?}: expected a cancel, got {other:?}"),
        }
    }
}

/// Models load (and are dropped) on one thread while sessions of another model generate on others;
/// the generating threads still get their sequential results.
#[test]
fn loading_models_while_others_generate() {
    for backend in backends() {
        let model = load(&model_dir("digits"), backend);
        let want: Vec<Vec<f32>> = (0..3).map(|k| generate(&model, &params(k))).collect();
        let workers: Vec<_> = (0..3u64)
            .map(|k| {
                let model = Arc::clone(&model);
                std::thread::spawn(move || (0..3).map(|_| generate(&model, &params(k))).collect::<Vec<_>>())
            })
            .collect();
        for name in ["digits", "digits-flow", "digits", "digits-int8"] {
            let other = load(&model_dir(name), backend);
            let samples = generate(&other, &GenerateParams { steps: Some(2), batch: 1, ..GenerateParams::default() });
            assert!(samples.iter().all(|v| v.is_finite()));
        }
        for (k, w) in workers.into_iter().enumerate() {
            for run in w.join().expect("worker") {
                assert!(run == want[k], "{backend:?} worker {k} changed while models loaded");
            }
        }
    }
}

fn c_params() -> drt_generate_params {
    let mut p = drt_generate_params_default();
    p.steps = 30;
    p.class_label = 4;
    p.seed = 9;
    p
}

/// Through the C API: while one session generates on a thread, another session of the same model
/// is freed and the model handle itself is freed; the running session keeps what it needs and
/// finishes with the sequential result, and can run again afterwards.
#[test]
fn freeing_sessions_and_the_model_while_another_session_runs() {
    for backend in backends() {
        let name = common::c::backend_cname(backend);
        let dir = CString::new(model_dir("digits").to_str().expect("utf8")).expect("cstr");
        let mut mp = drt_model_params_default();
        mp.backend = name.as_ptr();
        let p = c_params();
        let (mut m, mut running, mut spare) = (null_mut(), null_mut(), null_mut());
        let mut want = vec![0f32; 256];
        unsafe {
            assert_eq!(drt_model_load(dir.as_ptr(), &mp, &mut m), drt_status::DRT_OK);
            assert_eq!(drt_session_create(m, null(), &mut running), drt_status::DRT_OK);
            assert_eq!(drt_session_create(m, null(), &mut spare), drt_status::DRT_OK);
            assert_eq!(drt_generate(spare, &p, want.as_mut_ptr(), 256), drt_status::DRT_OK);
        }
        struct Ptr(*mut drt_session);
        unsafe impl Send for Ptr {}
        let session = Ptr(running);
        let (started_tx, started) = mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let session = session;
            unsafe extern "C" fn signal_once(step: u32, _: u32, user_data: *mut std::ffi::c_void) -> bool {
                if step == 1 {
                    (*(user_data as *const mpsc::Sender<()>)).send(()).ok();
                }
                true
            }
            let mut out = vec![0f32; 256];
            let mut p = c_params();
            p.progress = Some(signal_once);
            p.user_data = &started_tx as *const _ as *mut std::ffi::c_void;
            let status = unsafe { drt_generate(session.0, &p, out.as_mut_ptr(), 256) };
            (status, out, session)
        });
        started.recv().expect("the run started");
        unsafe {
            drt_session_free(spare);
            drt_model_free(m);
        }
        let (status, out, session) = worker.join().expect("worker");
        assert_eq!(status, drt_status::DRT_OK, "{backend:?}");
        assert!(out == want, "{backend:?}: the run that outlived its model handle differs");
        let mut again = vec![0f32; 256];
        unsafe {
            assert_eq!(drt_generate(session.0, &p, again.as_mut_ptr(), 256), drt_status::DRT_OK);
            drt_session_free(session.0);
        }
        assert!(again == want, "{backend:?}");
    }
}
