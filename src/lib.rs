//! snaptree: snapshot trees of virtual machines.
//!
//! Data flows one way: [`graphql`] calls [`service`], which checks the rules of
//! [`domain`] and writes through [`db`]; the [`robot`] claims the queued tasks and
//! drives a [`hypervisor`]; every state change is also an event on [`events`].
//! [`server`] wires these together for `snaptree serve`.

pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod error;
pub mod events;
pub mod graphql;
pub mod http;
pub mod hypervisor;
pub mod metrics;
pub mod monitoring;
pub mod robot;
pub mod server;
pub mod service;

pub use error::{AppError, AppResult};
