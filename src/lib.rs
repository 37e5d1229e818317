//! hookd: a durable webhook sender.
//!
//! The binary in `main.rs` only parses the command line and calls into these
//! modules. `ARCHITECTURE.md` at the repository root maps them; in short:
//!
//! - [`store`] owns the sled database: records, the due-time index, group commit.
//! - [`record`] is the on-disk format of a delivery and its codec.
//! - [`wheel`] decides *when*: it holds the deliveries due soon and hands them
//!   out at their due time.
//! - [`dispatch`] decides *how many at once* and runs attempts through
//!   [`attempt`], then records the outcome decided by [`schedule`].
//! - [`api`] is the unix-socket HTTP API; [`submission`] parses and checks
//!   what clients send.
//! - [`daemon`] wires all of this together for `hookd serve`; [`cli`] and
//!   [`client`] are the client verbs.

pub mod api;
pub mod attempt;
pub mod claims;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod dispatch;
pub mod guard;
pub mod id;
pub mod logging;
pub mod metrics;
pub mod recent;
pub mod record;
pub mod retention;
pub mod schedule;
pub mod shutdown;
pub mod signing;
pub mod socket;
pub mod store;
pub mod submission;
pub mod systemd;
pub mod view;
pub mod wheel;

/// The version reported in `User-Agent`, `/v1/health` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
