//! # sdx-portal
//!
//! Secure document exchange between a professional firm and the outside people on its matters.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accounts;
pub mod audit;
pub mod blob;
pub mod crypto;
pub mod error;
pub mod events;
pub mod model;
pub mod store;

pub use error::{Error, Result};
