//! convoy: a real-time location-sharing server. The modules below are the whole server;
//! `main.rs` only parses configuration and calls `App`.
#![forbid(unsafe_code)]

pub mod activity;
pub mod admission;
pub mod app;
pub mod auth;
pub mod bus;
pub mod chat;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod hub;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod reads;
pub mod revocation;
pub mod serve;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod sweeper;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod ws;

pub use app::App;
pub use config::Config;
