//! What an issue request asks for, from the JSON body of `POST /v1/get-token` or from the
//! `ticket` CLI, and how it becomes a signed token.
//!
//! JSON is read through `serde_json::Value` by hand so that every error names the exact
//! field (`right.tenant_grants[0].allow_channels_pub[2]: ...`).

use ed25519_dalek::SigningKey;
use fastpubsub_core::ticket::{
    self, Claims, ClaimsSpec, Grant, IpMask, IssueError, Protocols, limits,
};
use serde_json::Value;

use super::rfc3339;

/// Ingress limit (client → relay) when a request does not set one, KB/s. Deliberate: a
/// ticket goes to an end user; 1,000 publishes/s of 1 KiB is far above ordinary app
/// traffic, and one such publisher fanned out to 1,000 subscribers already asks for about
/// one core's worth of deliveries (docs/tickets.md, "Rate limits").
pub const DEFAULT_INGRESS_KB_PER_SEC: u32 = 1024;
/// Egress limit (relay → client) when a request does not set one, KB/s: four publishers
/// at the ingress default.
pub const DEFAULT_EGRESS_KB_PER_SEC: u32 = 4096;
/// Largest request body accepted by the token endpoints, bytes.
pub const MAX_BODY_LEN: usize = 64 * 1024;

/// One tenant grant, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantRequest {
    /// `tenant_ids`.
    pub tenants: Vec<String>,
    /// `allow_channels_pub`.
    pub publish: Vec<String>,
    /// `allow_channels_sub`.
    pub subscribe: Vec<String>,
}

/// A ticket request, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// `right.tenant_grants`.
    pub grants: Vec<GrantRequest>,
    /// `right.allow_ip_masks` (CIDR text).
    pub ip_masks: Vec<String>,
    /// `right.allowed_ws_origin`.
    pub origins: Vec<String>,
    /// `right.allow_protocols` (absent = both).
    pub protocols: Protocols,
    /// `right.ingress_kb_per_sec` (absent = the relay default).
    pub ingress_kb_per_sec: Option<u32>,
    /// `right.egress_kb_per_sec` (absent = the relay default).
    pub egress_kb_per_sec: Option<u32>,
    /// `right.expires_at`, unix seconds.
    pub expires_at: u64,
    /// `created_by`, for the log.
    pub created_by: Option<String>,
}

/// A refused request: HTTP status and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// HTTP status (4xx).
    pub status: u16,
    /// What is wrong, naming the field.
    pub message: String,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for RequestError {}

impl RequestError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }
}

fn field<'v>(obj: &'v Value, name: &str, path: &str) -> Result<Option<&'v Value>, RequestError> {
    let map = obj
        .as_object()
        .ok_or_else(|| RequestError::bad(format!("{path}: expected a JSON object")))?;
    Ok(map.get(name).filter(|v| !v.is_null()))
}

fn strings(v: Option<&Value>, path: &str) -> Result<Vec<String>, RequestError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let arr = v
        .as_array()
        .ok_or_else(|| RequestError::bad(format!("{path}: expected an array of strings")))?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_str()
                .map(str::to_owned)
                .ok_or_else(|| RequestError::bad(format!("{path}[{i}]: expected a string")))
        })
        .collect()
}

fn kb(v: Option<&Value>, path: &str) -> Result<Option<u32>, RequestError> {
    let Some(v) = v else { return Ok(None) };
    let n = v.as_u64().ok_or_else(|| {
        RequestError::bad(format!("{path}: expected an integer in [8, 16384] (KB/s)"))
    })?;
    let range = u64::from(limits::MIN_KB_PER_SEC)..=u64::from(limits::MAX_KB_PER_SEC);
    if !range.contains(&n) {
        return Err(RequestError::bad(format!(
            "{path}: {n} is outside [8, 16384] (KB/s)"
        )));
    }
    Ok(u32::try_from(n).ok())
}

/// Parses the JSON body of `POST /v1/get-token`, checking `expires_at` against `now`.
pub fn parse_get_token(body: &[u8], now: u64) -> Result<IssueRequest, RequestError> {
    if body.len() > MAX_BODY_LEN {
        return Err(RequestError {
            status: 413,
            message: format!("request body is over {MAX_BODY_LEN} bytes"),
        });
    }
    let root: Value = serde_json::from_slice(body)
        .map_err(|e| RequestError::bad(format!("body is not valid JSON: {e}")))?;
    let right = field(&root, "right", "body")?
        .ok_or_else(|| RequestError::bad("right: missing (the ticket's rights object)"))?;
    let grants_v = field(right, "tenant_grants", "right")?
        .ok_or_else(|| RequestError::bad("right.tenant_grants: missing"))?;
    let grants_arr = grants_v
        .as_array()
        .ok_or_else(|| RequestError::bad("right.tenant_grants: expected an array"))?;
    let mut grants = Vec::with_capacity(grants_arr.len().min(limits::MAX_GRANTS + 1));
    for (i, g) in grants_arr.iter().enumerate() {
        let p = format!("right.tenant_grants[{i}]");
        grants.push(GrantRequest {
            tenants: strings(field(g, "tenant_ids", &p)?, &format!("{p}.tenant_ids"))?,
            publish: strings(
                field(g, "allow_channels_pub", &p)?,
                &format!("{p}.allow_channels_pub"),
            )?,
            subscribe: strings(
                field(g, "allow_channels_sub", &p)?,
                &format!("{p}.allow_channels_sub"),
            )?,
        });
    }
    let regions = strings(
        field(right, "allow_regions", "right")?,
        "right.allow_regions",
    )?;
    if !regions.is_empty() {
        return Err(RequestError::bad(
            "right.allow_regions: this relay has no regions; send [] or leave it out",
        ));
    }
    let protocols = match field(right, "allow_protocols", "right")? {
        None => Protocols::ALL,
        Some(v) => {
            let names = strings(Some(v), "right.allow_protocols")?;
            if names.is_empty() {
                return Err(RequestError::bad(
                    "right.allow_protocols: empty (would allow nothing); leave it out for both",
                ));
            }
            let mut set = Protocols::NONE;
            for (i, n) in names.iter().enumerate() {
                let p = Protocols::from_name(n).ok_or_else(|| {
                    RequestError::bad(format!(
                        "right.allow_protocols[{i}]: {n:?} is not \"websocket\" or \"webtransport\""
                    ))
                })?;
                set = set.union(p);
            }
            set
        }
    };
    let expires_text = field(right, "expires_at", "right")?
        .ok_or_else(|| {
            RequestError::bad("right.expires_at: missing (RFC 3339, e.g. 2026-11-27T12:00:00Z)")
        })?
        .as_str()
        .ok_or_else(|| RequestError::bad("right.expires_at: expected an RFC 3339 string"))?;
    let expires_at = rfc3339::parse(expires_text)
        .map_err(|e| RequestError::bad(format!("right.expires_at: {e}")))?;
    check_expiry(expires_at, now, "right.expires_at")?;
    let created_by = match field(&root, "created_by", "body")? {
        None => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| RequestError::bad("created_by: expected a string"))?
                .chars()
                .take(128)
                .collect(),
        ),
    };
    Ok(IssueRequest {
        grants,
        ip_masks: strings(
            field(right, "allow_ip_masks", "right")?,
            "right.allow_ip_masks",
        )?,
        origins: strings(
            field(right, "allowed_ws_origin", "right")?,
            "right.allowed_ws_origin",
        )?,
        protocols,
        ingress_kb_per_sec: kb(
            field(right, "ingress_kb_per_sec", "right")?,
            "right.ingress_kb_per_sec",
        )?,
        egress_kb_per_sec: kb(
            field(right, "egress_kb_per_sec", "right")?,
            "right.egress_kb_per_sec",
        )?,
        expires_at,
        created_by,
    })
}

/// Refuses an expiry in the past or more than 24 h ahead.
pub fn check_expiry(expires_at: u64, now: u64, name: &str) -> Result<(), RequestError> {
    if expires_at <= now {
        return Err(RequestError::bad(format!(
            "{name}: {} is not in the future (now is {})",
            rfc3339::format(expires_at),
            rfc3339::format(now)
        )));
    }
    if expires_at - now > limits::MAX_TTL_SECS {
        return Err(RequestError::bad(format!(
            "{name}: {} is more than 24 h ahead (latest allowed: {})",
            rfc3339::format(expires_at),
            rfc3339::format(now + limits::MAX_TTL_SECS)
        )));
    }
    Ok(())
}

fn issue_error(e: IssueError) -> RequestError {
    let message = match e {
        IssueError::InvalidTenant { .. }
        | IssueError::InvalidPattern { .. }
        | IssueError::GrantWithoutTenant { .. }
        | IssueError::NoGrants => e.to_string(),
        IssueError::OverCap(cap) => format!("request over cap: {cap}"),
        other => other.to_string(),
    };
    RequestError::bad(message)
}

/// Builds the claims of `req` (issued `now`, random `ticket_id`) and signs them.
pub fn sign(
    req: &IssueRequest,
    ticket_id: [u8; 16],
    now: u64,
    default_kb: (u32, u32),
    key: &SigningKey,
) -> Result<String, RequestError> {
    let masks = req
        .ip_masks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            IpMask::parse(m)
                .map_err(|e| RequestError::bad(format!("right.allow_ip_masks[{i}]: {m:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let grant_strs: Vec<[Vec<&str>; 3]> = req
        .grants
        .iter()
        .map(|g| {
            [&g.tenants, &g.publish, &g.subscribe]
                .map(|list| list.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .collect();
    let grants = grant_strs
        .iter()
        .map(|[t, p, s]| Grant::new(t, p, s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(issue_error)?;
    let origins: Vec<&str> = req.origins.iter().map(String::as_str).collect();
    let spec = ClaimsSpec {
        ticket_id,
        issued_at: now,
        expires_at: req.expires_at,
        grants: &grants,
        ip_masks: &masks,
        origins: &origins,
        protocols: req.protocols,
        ingress_kb_per_sec: req.ingress_kb_per_sec.unwrap_or(default_kb.0),
        egress_kb_per_sec: req.egress_kb_per_sec.unwrap_or(default_kb.1),
    };
    let claims = Claims::new(&spec).map_err(issue_error)?;
    let mut out = vec![0u8; limits::MAX_TOKEN_LEN];
    ticket::issue(&claims, key, &mut out)
        .map(str::to_owned)
        .map_err(issue_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_770_000;

    fn body(right: &str) -> Vec<u8> {
        format!(r#"{{"right":{right},"created_by":"test"}}"#).into_bytes()
    }

    #[test]
    fn full_request_parses() {
        let b = body(
            r#"{"tenant_grants":[{"tenant_ids":["tenant_1"],"allow_channels_pub":["public.#"],"allow_channels_sub":["public.#"]}],
            "allow_ip_masks":["10.0.0.0/8"],"allow_regions":[],"allowed_ws_origin":["https://a.example"],
            "allow_protocols":["websocket"],"ingress_kb_per_sec":512,"egress_kb_per_sec":2048,
            "expires_at":"2026-11-27T12:00:00Z"}"#,
        );
        let r = parse_get_token(&b, NOW).expect("must succeed");
        assert_eq!(r.grants[0].tenants, ["tenant_1"]);
        assert_eq!(r.protocols, Protocols::WEBSOCKET);
        assert_eq!(
            (r.ingress_kb_per_sec, r.egress_kb_per_sec),
            (Some(512), Some(2048))
        );
        assert_eq!(r.expires_at, 1_795_780_800);
        assert_eq!(r.created_by.as_deref(), Some("test"));
    }

    #[test]
    fn errors_name_the_field() {
        let g = r#"[{"tenant_ids":["t"],"allow_channels_pub":["a"],"allow_channels_sub":["a"]}]"#;
        let exp = r#""expires_at":"2026-11-27T12:00:00Z""#;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{".to_vec(), "not valid JSON"),
            (b"[]".to_vec(), "body: expected a JSON object"),
            (b"{}".to_vec(), "right: missing"),
            (body(&format!("{{{exp}}}")), "right.tenant_grants: missing"),
            (
                body(&format!(r#"{{"tenant_grants":{{}},{exp}}}"#)),
                "right.tenant_grants: expected an array",
            ),
            (
                body(&format!(
                    r#"{{"tenant_grants":[{{"tenant_ids":["t",5]}}],{exp}}}"#
                )),
                "right.tenant_grants[0].tenant_ids[1]: expected a string",
            ),
            (
                body(&format!(r#"{{"tenant_grants":{g}}}"#)),
                "right.expires_at: missing",
            ),
            (
                body(&format!(
                    r#"{{"tenant_grants":{g},"expires_at":"tomorrow"}}"#
                )),
                "right.expires_at: expected an RFC 3339",
            ),
            (
                body(&format!(
                    r#"{{"tenant_grants":{g},"expires_at":"2026-11-29T12:00:00Z"}}"#
                )),
                "more than 24 h ahead",
            ),
            (
                body(&format!(
                    r#"{{"tenant_grants":{g},"expires_at":"2020-01-01T00:00:00Z"}}"#
                )),
                "not in the future",
            ),
            (
                body(&format!(
                    r#"{{"tenant_grants":{g},{exp},"ingress_kb_per_sec":7}}"#
                )),
                "right.ingress_kb_per_sec: 7 is outside [8, 16384]",
            ),
            (
                body(&format!(
                    r#"{{"tenant_grants":{g},{exp},"egress_kb_per_sec":16385}}"#
                )),
                "right.egress_kb_per_sec: 16385 is outside",
            ),
            (
                body(&format!(
                    r#"{{"tenant_grants":{g},{exp},"egress_kb_per_sec":"fast"}}"#
                )),
                "right.egress_kb_per_sec: expected an integer",
            ),
            (
                body(&format!(
                    r#"{{"tenant_grants":{g},{exp},"allow_protocols":["quic"]}}"#
                )),
                "right.allow_protocols[0]",
            ),
            (
                body(&format!(
                    r#"{{"tenant_grants":{g},{exp},"allow_protocols":[]}}"#
                )),
                "right.allow_protocols: empty",
            ),
            (
                body(&format!(
                    r#"{{"tenant_grants":{g},{exp},"allow_regions":["eu"]}}"#
                )),
                "right.allow_regions",
            ),
        ];
        for (b, want) in cases {
            let e = parse_get_token(&b, NOW).expect_err("must fail");
            assert_eq!(e.status, 400);
            assert!(
                e.message.contains(want),
                "{:?}: {} (wanted {want})",
                String::from_utf8_lossy(&b),
                e.message
            );
        }
        let big = vec![b' '; MAX_BODY_LEN + 1];
        assert_eq!(
            parse_get_token(&big, NOW).expect_err("must fail").status,
            413
        );
    }

    #[test]
    fn sign_refuses_caps_and_bad_patterns_by_name() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let base = IssueRequest {
            grants: vec![GrantRequest {
                tenants: vec!["t".into()],
                publish: vec!["public.#".into()],
                subscribe: vec!["public.#".into()],
            }],
            ip_masks: vec![],
            origins: vec![],
            protocols: Protocols::ALL,
            ingress_kb_per_sec: None,
            egress_kb_per_sec: None,
            expires_at: NOW + 60,
            created_by: None,
        };
        let token = sign(&base, [1; 16], NOW, (1024, 4096), &key).expect("must succeed");
        let mut buf = fastpubsub_core::ticket::TicketBuf::new();
        let c = ticket::verify(&token, &key.verifying_key(), &mut buf, NOW).expect("must succeed");
        assert_eq!(
            (c.ingress_kb_per_sec(), c.egress_kb_per_sec()),
            (1024, 4096),
            "defaults applied"
        );

        let mut r = base.clone();
        r.grants[0].publish = (0..9).map(|i| format!("p{i}")).collect();
        let e = sign(&r, [1; 16], NOW, (8, 8), &key).expect_err("must fail");
        assert!(
            e.message
                .contains("at most 8 allow_channels_pub patterns per grant"),
            "{}",
            e.message
        );
        let mut r = base.clone();
        r.grants[0].subscribe = vec!["a.#.b".into()];
        let e = sign(&r, [1; 16], NOW, (8, 8), &key).expect_err("must fail");
        assert!(
            e.message
                .contains("tenant_grants[0].allow_channels_sub: invalid pattern"),
            "{}",
            e.message
        );
        let mut r = base.clone();
        r.ip_masks = vec!["10.0.0.0/40".into()];
        let e = sign(&r, [1; 16], NOW, (8, 8), &key).expect_err("must fail");
        assert!(
            e.message.contains("right.allow_ip_masks[0]"),
            "{}",
            e.message
        );
        let mut r = base;
        r.grants = vec![GrantRequest::default(); 5];
        let e = sign(&r, [1; 16], NOW, (8, 8), &key).expect_err("must fail");
        assert!(
            e.message.contains("at most 4 tenant_grants per ticket"),
            "{}",
            e.message
        );
    }
}
