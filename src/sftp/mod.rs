//! The SFTP front end.

pub mod handler;
