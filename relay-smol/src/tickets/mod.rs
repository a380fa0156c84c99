//! Relay side of access tickets: issuing, status store, verified-ticket cache.
//!
//! - [`TicketService`] holds the state and answers everything: `admit` a handshake,
//!   `check_live` a connection, and the REST calls `get_token`, `refresh_token`,
//!   `revoke_token` (plain `(status, body)` functions, no HTTP in here).
//! - [`keys`]: key files (`keygen`), master token.
//! - [`request`]: the JSON of `POST /v1/get-token` → signed token.
//! - [`cache`]: the bounded verified-ticket cache.
//! - [`persist`]: the status table's file in the state directory (revocations survive
//!   restarts).
//! - [`rfc3339`]: timestamps of the REST API.
//! - [`cli`]: `keygen`, `ticket` (mint offline), `ticket inspect`, first-run state.
//! - [`edge`]: the edge's `Authorizer`/`Access`, the REST routes, `run`'s setup.

pub mod cache;
pub mod cli;
pub mod edge;
pub mod keys;
pub mod persist;
pub mod request;
pub mod rfc3339;
mod service;

pub use service::{
    Denied, MAX_STATUS_CAPACITY, RemoteRecordError, StatusLoaded, TicketConfig, TicketService,
    TicketStats,
};
