//! The API behaviour suite: each test starts the real application on port 0 with its own
//! database and drives it over HTTPS, as a client would.

mod audit;
mod auth;
mod authorization;
mod bench;
mod browser;
mod certification;
mod chain_outage;
mod cli;
mod cluster;
mod crash_loop;
mod demo;
mod disk_full;
mod ethereum_tools;
mod helpers;
mod measurements;
mod metrics;
mod mosquitto;
mod mosquitto_server;
mod mqtt;
mod mqtt_client;
mod mqtt_cluster;
mod paho;
mod postgres;
mod replicas;
mod schemathesis;
mod server;
mod setpoints;
mod subscriptions;
mod upgrade;
mod users;
mod web;
