//! faithful: attribution-preserving network compression on burn.
//!
//! Data flows one way: [`data`] -> [`models`] -> [`attribution`] -> [`matching`] /
//! [`compression`] -> [`training`] -> [`evaluation`] -> [`report`]; the `faithful` binary is a
//! thin CLI over these.

pub mod attribution;
pub mod bench;
pub mod cells;
pub mod cluster;
pub mod compression;
pub mod config;
pub mod data;
pub mod doctor;
pub mod evaluation;
pub mod experiment;
pub mod explain;
pub mod export;
pub mod fuzz;
pub mod matching;
pub mod metrics;
pub mod models;
pub mod report;
pub mod runtime;
pub mod training;
pub mod util;
