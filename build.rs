// The C header (include/diffusion_rt.h) will be generated here with cbindgen once the C ABI lands;
// until then the build needs no generated code.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
