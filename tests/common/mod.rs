//! Shared helpers for the integration tests: fake DoH/DoT upstreams answering from an in-memory
//! zone, and plain DNS clients. Everything binds and connects to loopback only.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod control;
pub mod fake_upstream;
pub mod mmdb;
pub mod plain;
pub mod prom;
pub mod proxy;
pub mod relay;
pub mod scenario;
pub mod scripted;
pub mod sites;
pub mod tls;
pub mod zone;

pub use client::*;
pub use control::*;
pub use fake_upstream::*;
pub use plain::*;
pub use prom::*;
pub use proxy::*;
pub use relay::*;
pub use scripted::*;
pub use sites::*;
pub use tls::*;
pub use zone::*;
