//! What the three runtimeuse client adapters (`runtimeuse-tokio`, `runtimeuse-async-std`,
//! `runtimeuse-tungstenite`) share and that needs no async runtime: the connection settings
//! and [`ClientBuilder`], and the [`Error`] type. Applications use it through an adapter, which
//! re-exports all of it.
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `rustls` | no | [`ClientSettings::tls_config`]: a rustls configuration (ring provider) |
//! | `webpki-roots` | no | with `rustls`, trust the webpki root certificates |

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod error;
mod settings;

pub use error::Error;
pub use settings::{ClientBuilder, ClientSettings};
