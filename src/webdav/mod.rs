//! The WebDAV front end.

pub mod fs;
