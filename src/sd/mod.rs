//! Stable Diffusion exports as Hugging Face Optimum writes them (`model_index.json`, `tokenizer/`,
//! `text_encoder/`, `unet/`, `vae_decoder/`, ...), read as they are, without a `model.json`.

pub mod bench;
pub mod budget;
pub mod config;
pub mod image_input;
pub mod pipeline;
pub mod resize;
pub mod session;
pub mod tokenizer;
pub mod vae;

pub use pipeline::{Description, Images, PartDescription, SdOptions, StableDiffusion, TextToImage};
pub use session::SdSession;
pub use tokenizer::ClipTokenizer;

/// A model error naming the export's file at fault.
fn model_err(path: &std::path::Path, msg: impl std::fmt::Display) -> crate::error::Error {
    crate::error::Error::Model(format!("{}: {msg}", path.display()))
}
