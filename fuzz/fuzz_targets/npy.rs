//! `.npy` parsing (--noise, --init): any bytes are an array or an error, never a panic or a huge
//! allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = diffusion_rt::npy::from_bytes(data) {
        assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
    }
});
