//! The `bal` binary's library: settings, TLS, and [`app::Application`], the one entry point
//! that `bal serve` and the integration tests both start.
//!
//! - [`settings`]: layered settings and the default `bal.toml`.
//! - [`tls`]: the operator's certificate or a generated CA and certificate.
//! - [`app`]: opens the database and keys, binds the listener, serves until shutdown.
//! - [`cli`]: the `bal user ...` commands; [`db`]: `bal db migrate|status|copy`.
//! - [`bench`]: `bal bench`, the ingest benchmark against a pass-through baseline.
//! - [`bench_certify`]: `bal bench-certify`, certification against one transaction per reading.
//! - [`demo`]: `bal demo`, the BAL with demo users, grants and simulated devices.
//! - [`devices`]: simulated MQTT devices, for the demo and the benchmark.
//! - [`load`]: `bal bench-load`, the benchmarks' load generator in a process of its own.
//! - [`proc_stat`]: CPU time and memory of processes, read from `/proc` for the benchmarks.
//! - [`verify`]: `bal verify`, checking a proof bundle without the BAL.
#![forbid(unsafe_code)]

pub mod app;
pub mod bench;
pub mod bench_certify;
pub mod bench_cluster;
pub mod bench_idle;
pub mod bench_replicas;
pub mod bench_setpoints;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod db;
pub mod demo;
pub mod devices;
pub mod health;
pub mod load;
pub mod mqtt_cluster;
pub mod proc_stat;
pub mod scratch;
pub mod settings;
pub mod tls;
pub mod verify;
