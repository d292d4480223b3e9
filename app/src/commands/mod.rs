//! The CLI's generation commands: its flags, and generate / inpaint / outpaint / expand /
//! encode / decode with progress bars. The work itself is the core's: the model pair
//! ([`arpg_core::pair`]), the edit pipeline ([`arpg_core::edit`]) and the PNG format
//! ([`arpg_core::document`]).

mod args;
mod edit;
mod generate;

pub use args::{MaskArgs, ModelArgs, Region, SamplerArgs};
pub use edit::{decode, encode, expand, import, inpaint, open_image, outpaint, to_working_size};
pub use generate::{generate, regenerate, save};
