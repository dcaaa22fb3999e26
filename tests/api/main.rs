//! Integration tests: one binary, one module per area, all driving the real server.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

mod helpers;

mod affinity;
mod architecture;
mod auth_first;
mod bus_bounds;
mod bus_conformance;
mod caps;
mod chat;
mod cluster;
mod cors;
mod delivery;
mod deploy;
mod direct;
mod edge;
mod errors;
mod fallback;
mod faults;
mod floods;
mod frames;
mod fuzz;
mod growth;
mod health;
mod heartbeat;
mod lifetimes;
mod limits;
mod meetup;
mod observability;
mod openapi;
mod participants;
mod phoenix;
mod presence;
mod proxy;
mod refresh;
mod revocation;
mod roll_call;
mod secret;
mod sessions;
mod shards;
mod shutdown;
mod slow_consumer;
mod store_conformance;
mod tokens;
mod topics;
mod tracker;
mod web;
mod websocket;
