//! model.json parsing and validation: any text is a manifest or a manifest error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(m) = diffusion_rt::manifest::Manifest::parse(&text) {
        // A valid manifest must also describe a schedule the runtime can build, or say why not.
        let _ = m.noise_schedule.to_schedule();
        let _ = m.sample_len();
    }
});
