//! The WebTransport edge ("QUIC for clients", `shared/spec/llps-wt-v0.1.md`): the LLPS client
//! contract over HTTP/3 WebTransport, on the relay's own QUIC stack (quinn-proto driven by
//! async-io), delivering from the same broker as the WebSocket edge.
//!
//! - [`h3`]: sans-IO HTTP/3 + WebTransport over one `quinn_proto::Connection` (both sides).
//! - [`frame`]: LLPS framing on the control stream and the lines; `SUB` delivery options.
//! - [`session`]: one session: the CONNECT authorized, commands and publishes into the broker,
//!   deliveries re-framed onto the control stream, lines and datagrams.
//! - [`endpoint`]: the UDP listener task (quinn-proto server endpoint + sessions).
//! - [`client`]: a blocking client (the `sub`/`pub` tools with `https://`, tests).
//! - [`discovery`]: `GET /v1/edges`, the SDK's bootstrap document from the mesh's announcements.
//! - [`status`]: the listener's typed status: `GET /v1/wt-stats` and `/metrics`.
//! - [`cert`]: the certificate (files, or generated ECDSA P-256 ≤ 14 days, rotated) and
//!   `GET /v1/wt-cert-hash`.

pub mod cert;
pub mod client;
pub mod discovery;
pub mod endpoint;
pub mod frame;
pub mod h3;
pub mod session;
pub mod status;
