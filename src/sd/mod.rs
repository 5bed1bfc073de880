//! Stable Diffusion exports as Hugging Face Optimum writes them (`model_index.json`, `tokenizer/`,
//! `text_encoder/`, `unet/`, `vae_decoder/`, ...), read as they are, without a `model.json`.

pub mod config;
pub mod pipeline;
pub mod tokenizer;

pub use pipeline::{Images, StableDiffusion, TextToImage};
pub use tokenizer::ClipTokenizer;
