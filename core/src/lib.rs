//! ARPG Studio's engine: the ARPG transformer (Li et al., "Autoregressive Image Generation with
//! Randomized Parallel Decoding", arXiv 2503.10568; reference hp-l33/ARPG) and the LlamaGen VQ
//! tokenizer on candle, checkpoint loading, and the randomized parallel sampler.

pub mod backend;
pub mod canvas;
pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod document;
pub mod edit;
pub mod error;
#[cfg(feature = "train")]
pub mod eval;
pub mod generator;
#[cfg(feature = "wgpu")]
pub mod gpu;
pub mod host;
pub mod identity;
pub mod imagenet;
pub mod kernels;
pub mod loader;
pub mod model;
pub mod order;
pub mod pair;
pub mod pixels;
pub mod provenance;
pub mod reference;
pub mod run;
pub mod sampler;
pub mod schedule;
pub mod shipped;
pub mod text;
#[cfg(feature = "train")]
pub mod train;
pub mod vq;

pub use backend::{Backend, Tokenizer, Transformer};
pub use config::{ArpgConfig, VqConfig};
pub use error::{Error, Result};
pub use generator::{Generation, KnownCells, OrderMode, Request, Settings, StepOutput};
pub use model::Arpg;
pub use vq::VqModel;
