//! fusec as a library: the commands of the `fusec` command line, each
//! returning its typed report (what `--json` prints under `"report"`), and
//! the command line itself ([`cli::main`]). The Python package calls these.

mod cache;
pub mod calibration;
pub mod cli;
pub mod commands;
pub mod costs;
mod lineup;
pub mod models;
pub mod report;
pub mod speed;
pub mod tune;

pub use report::Failure;
