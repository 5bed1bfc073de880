//! Stable Diffusion exports as Hugging Face Optimum writes them (`model_index.json`, `tokenizer/`,
//! `text_encoder/`, `unet/`, `vae_decoder/`, ...), read as they are, without a `model.json`.

pub mod bench;
pub mod config;
pub mod pipeline;
pub mod tokenizer;
pub mod vae;

pub use pipeline::{Images, SdOptions, StableDiffusion, TextToImage};
pub use tokenizer::ClipTokenizer;
