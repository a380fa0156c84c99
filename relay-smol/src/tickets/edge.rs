//! The tickets plugged into the edge: the handshake [`Authorizer`], the per-connection
//! [`Access`], the REST routes of the token lifecycle, and the setup `run` uses (state
//! directory, secure first run).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use fastpubsub_core::ticket::{Protocols, TicketError};

use super::cache::VerifiedTicket;
use super::cli::{self, StateFiles, unix};
use super::keys;
use super::request::{self, GrantRequest, IssueRequest};
use super::rfc3339;
use super::service::{StatusLoaded, TicketConfig, TicketService};
use crate::auth::{Access, Authorizer, HandshakeRequest, RateLimits, Refusal};
use crate::rest::{HttpRequest, HttpResponse, RestHandler};

fn protocols(p: crate::auth::Protocol) -> Protocols {
    match p {
        crate::auth::Protocol::WebTransport => Protocols::WEBTRANSPORT,
        _ => Protocols::WEBSOCKET,
    }
}

/// Checks every handshake against the ticket service.
pub struct TicketAuthorizer {
    service: Arc<TicketService>,
}

impl TicketAuthorizer {
    /// An authorizer over `service`.
    pub fn new(service: Arc<TicketService>) -> Self {
        Self { service }
    }
}

impl Authorizer for TicketAuthorizer {
    fn authorize(&self, req: &HandshakeRequest<'_>) -> Result<Box<dyn Access>, Refusal> {
        let now = unix(req.now);
        match self.service.admit(
            req.token,
            req.peer,
            req.origin,
            protocols(req.protocol),
            now,
        ) {
            Ok(ticket) => Ok(Box::new(TicketAccess {
                ticket,
                service: Arc::clone(&self.service),
            })),
            Err(d) => Err(Refusal {
                status: d.status,
                reason: d.reason,
            }),
        }
    }
}

/// What one ticket-holding connection may do.
pub struct TicketAccess {
    ticket: Arc<VerifiedTicket>,
    service: Arc<TicketService>,
}

impl Access for TicketAccess {
    fn may_publish(&self, tenant: &str, channel: &str) -> bool {
        self.ticket
            .claims()
            .is_ok_and(|c| c.may_publish(tenant, channel))
    }

    fn may_subscribe(&self, tenant: &str, pattern: &str) -> bool {
        self.ticket
            .claims()
            .is_ok_and(|c| c.may_subscribe(tenant, pattern))
    }

    fn rate_limits(&self) -> RateLimits {
        RateLimits {
            ingress_bytes_per_sec: Some(u32::from(self.ticket.ingress_kb_per_sec()) * 1024),
            egress_bytes_per_sec: Some(u32::from(self.ticket.egress_kb_per_sec()) * 1024),
        }
    }

    fn check(&self, now: SystemTime) -> Result<(), String> {
        match self.service.check_live(&self.ticket, unix(now)) {
            Ok(_) => Ok(()),
            Err(TicketError::Expired { expired_at }) => {
                Err(format!("ticket expired at {}", rfc3339::format(expired_at)))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The REST routes `POST /v1/get-token`, `PUT /v1/refresh-token`, `DELETE /v1/revoke-token`
/// and `GET /v1/ticket-stats`.
pub struct TicketRest {
    service: Arc<TicketService>,
}

impl TicketRest {
    /// Routes over `service`.
    pub fn new(service: Arc<TicketService>) -> Self {
        Self { service }
    }
}

impl RestHandler for TicketRest {
    fn handle(&self, req: &HttpRequest, now: SystemTime) -> Option<HttpResponse> {
        let now = unix(now);
        let auth = req.header("authorization");
        let s = &self.service;
        let (status, body) = match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/v1/get-token") => s.get_token(auth, &req.body, now),
            ("PUT", "/v1/refresh-token") => s.refresh_token(auth, &req.body, now),
            ("DELETE", "/v1/revoke-token") => s.revoke_token(auth, &req.body, now),
            ("GET", "/v1/ticket-stats") => {
                let st = s.stats();
                let json = serde_json::json!({
                    "verified_cold": st.verified_cold,
                    "cache_hits": st.cache_hits,
                    "refused": st.refused,
                    "status_full": st.status_full,
                    "status_records": st.status_records,
                    "status_capacity": s.config().status_capacity,
                    "cache_evicted": st.cache_evicted,
                    "status_saved": st.status_saved,
                    "status_save_failed": st.status_save_failed,
                });
                (200, json.to_string())
            }
            (
                m,
                p @ ("/v1/get-token" | "/v1/refresh-token" | "/v1/revoke-token"
                | "/v1/ticket-stats"),
            ) => {
                let want = match p {
                    "/v1/get-token" => "POST",
                    "/v1/refresh-token" => "PUT",
                    "/v1/revoke-token" => "DELETE",
                    _ => "GET",
                };
                (405, format!("{m} {p}: use {want} {p}"))
            }
            _ => return None,
        };
        Some(if status == 200 {
            HttpResponse::json(status, body)
        } else {
            HttpResponse::text(status, body)
        })
    }
}

/// Ticket options of `run`.
#[derive(Debug, Clone, Default)]
pub struct TicketOptions {
    /// State directory (signing key, public key, master token, saved status records);
    /// default [`cli::default_state_dir`]. A verifier-only relay keeps its status records
    /// there too.
    pub state_dir: Option<PathBuf>,
    /// Check tickets with this public key only (a relay that cannot issue).
    pub public_key: Option<PathBuf>,
    /// Status table capacity (refresh/revoke records).
    pub status_capacity: Option<usize>,
    /// Keep up to this many locally made status records for the mesh to flood (0: none).
    pub outbox_capacity: Option<usize>,
}

/// The ticket machinery of a running relay.
pub struct TicketSetup {
    service: Arc<TicketService>,
    state: Option<StateFiles>,
}

impl TicketSetup {
    /// Loads (or, on a first run, creates) the key material, and the status records saved
    /// in the state directory (`now`: wall clock, to drop expired ones).
    pub fn load(opts: &TicketOptions, now: SystemTime) -> Result<Self, String> {
        let mut config = TicketConfig::default();
        if let Some(c) = opts.status_capacity {
            if c == 0 || c > super::MAX_STATUS_CAPACITY {
                return Err(format!(
                    "--ticket-status-capacity {c}: must be in 1..={}",
                    super::MAX_STATUS_CAPACITY
                ));
            }
            config.status_capacity = c;
        }
        if let Some(c) = opts.outbox_capacity {
            config.outbox_capacity = c;
        }
        let dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(cli::default_state_dir);
        let (mut service, state) = if let Some(pk) = &opts.public_key {
            let public = keys::read_public_key(pk).map_err(|e| e.to_string())?;
            keys::create_private_dir(&dir).map_err(|e| e.to_string())?;
            (TicketService::verifier(public, config), None)
        } else {
            let state = cli::ensure_state(&dir).map_err(|e| e.to_string())?;
            let service = TicketService::issuer(state.signing.clone(), &state.master_token, config);
            (service, Some(state))
        };
        let path = dir.join(super::persist::STATUS_FILE);
        let loaded = service
            .attach_status_file(&path, unix(now))
            .map_err(|e| e.to_string())?;
        if loaded != StatusLoaded::default() {
            log::info!(
                "ticket status: {} refresh/revoke records loaded from {} ({} expired, {} for another ticket key, {} over capacity dropped)",
                loaded.applied,
                path.display(),
                loaded.expired,
                loaded.other_key,
                loaded.full
            );
        }
        if loaded.other_key > 0 {
            log::warn!(
                "{}: {} records were signed with another ticket key and were dropped (tickets of that key are refused anyway)",
                path.display(),
                loaded.other_key
            );
        }
        Ok(Self {
            service: Arc::new(service),
            state,
        })
    }

    /// Saves the status records to the state directory once a second when they changed
    /// (records from the mesh; those made here are saved before the REST call answers).
    /// Runs until the executor stops.
    pub fn spawn_status_saver(&self, ex: &smol::LocalExecutor<'static>) {
        let service = self.service();
        ex.spawn(async move {
            let mut tick = smol::Timer::interval(std::time::Duration::from_secs(1));
            loop {
                futures_lite::StreamExt::next(&mut tick).await;
                // Failures are logged and counted by `save_status`, and retried next tick.
                let _ = service.save_status(unix(crate::clock::wall_now()));
            }
        })
        .detach();
    }

    /// Saves pending status changes now (at shutdown).
    pub fn save_status_now(&self) {
        let _ = self.service.save_status(unix(crate::clock::wall_now()));
    }

    /// The shared service.
    pub fn service(&self) -> Arc<TicketService> {
        Arc::clone(&self.service)
    }

    /// The handshake authorizer.
    pub fn authorizer(&self) -> Rc<dyn Authorizer> {
        Rc::new(TicketAuthorizer::new(self.service()))
    }

    /// The REST routes.
    pub fn rest_handler(&self) -> Rc<dyn RestHandler> {
        Rc::new(TicketRest::new(self.service()))
    }

    /// What to print once the relay listens on `addr`: on a first run the master token, a
    /// dev ticket and commands to try; later a one-line summary.
    pub fn announce(&self, addr: SocketAddr, now: SystemTime, exe: &str) -> String {
        let Some(state) = &self.state else {
            return "access tickets: checked with the configured public key (this relay does not issue)\n"
                .to_owned();
        };
        if !state.created {
            return format!(
                "access tickets: issuing relay; key material in {} (master token in {}/{})\n",
                state.dir.display(),
                state.dir.display(),
                keys::MASTER_TOKEN_FILE
            );
        }
        let now = unix(now);
        let req = IssueRequest {
            grants: vec![GrantRequest {
                tenants: vec!["dev".into()],
                publish: vec!["public.#".into()],
                subscribe: vec!["public.#".into()],
            }],
            ip_masks: Vec::new(),
            origins: Vec::new(),
            protocols: Protocols::ALL,
            ingress_kb_per_sec: None,
            egress_kb_per_sec: None,
            expires_at: now + fastpubsub_core::ticket::limits::MAX_TTL_SECS,
            created_by: Some("first-run".into()),
        };
        let cfg = self.service.config();
        let defaults = (
            cfg.default_ingress_kb_per_sec,
            cfg.default_egress_kb_per_sec,
        );
        let ticket = keys::random::<16>()
            .map_err(|e| e.to_string())
            .and_then(|id| {
                request::sign(&req, id, now, defaults, &state.signing).map_err(|e| e.message)
            })
            .unwrap_or_else(|e| format!("<could not mint a dev ticket: {e}>"));
        cli::first_run_banner(state, &addr.to_string(), &ticket, exe, now, defaults)
    }
}
