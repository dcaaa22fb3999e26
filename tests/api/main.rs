//! Integration tests: one binary, one module per area, all driving the real server.

mod helpers;

mod errors;
mod health;
mod lifetimes;
mod participants;
mod sessions;
mod shutdown;
mod slow_consumer;
mod tokens;
mod websocket;
