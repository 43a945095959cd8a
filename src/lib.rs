pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod hypervisor;
pub mod service;
pub use error::{AppError, AppResult};
