//! # sdx-portal
//!
//! Secure document exchange between a professional firm and the outside people on its matters.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accounts;
pub mod audit;
pub mod blob;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod error;
pub mod events;
pub mod locks;
pub mod model;
pub mod names;
pub mod path;
pub mod policy;
pub mod portal;
pub mod provision;
pub mod server;
pub mod sftp;
pub mod store;
pub mod tls;
pub mod tree;
pub mod webdav;

pub use error::{Error, Result};
pub use portal::{Portal, PortalBuilder};
