//! Who may see the admin pages: `/v1/status`, `/v1/mesh`, `/metrics` and `/dashboard`.
//!
//! They reveal the mesh topology, so they are not open to the world by default. Two ways in:
//!
//! 1. **The admin listener** (default `127.0.0.1:9091`, [`DEFAULT_ADMIN_LISTEN`]): a separate
//!    HTTP listener bound to loopback. Whoever can connect to it is an operator on the host
//!    (or came through an SSH tunnel / a reverse proxy the operator set up).
//! 2. **An admin credential** (`--admin-token`, at least [`MIN_TOKEN_LEN`] bytes): with one
//!    configured, the admin paths are also served on the public edge listener to requests
//!    carrying `Authorization: Bearer <token>` or HTTP Basic with user `admin` and the token as
//!    password (so a browser's own login prompt works for the dashboard). Without a token the
//!    public listener answers the admin paths with 404, as if they did not exist.
//!
//! The HTTP layer calls [`AdminAccess::check`] for every request whose path satisfies
//! [`is_admin_path`] and turns a [`Denied`] into its status line and headers.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Default address of the admin listener: loopback only.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9091));
/// Shortest admin token accepted (bytes).
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest admin token accepted (bytes).
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest `Authorization` header examined (bytes); longer ones are refused without decoding.
pub const MAX_AUTH_HEADER_LEN: usize = 1024;
/// The user name expected with HTTP Basic.
pub const BASIC_USER: &str = "admin";

/// True for the paths this module guards.
pub fn is_admin_path(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    matches!(path, "/v1/status" | "/v1/mesh" | "/metrics")
        || path == "/dashboard"
        || path.starts_with("/dashboard/")
}

/// Which listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Listener {
    /// The admin listener (loopback by default).
    Admin,
    /// The public edge listener.
    Public,
}

/// A misconfigured admin credential: the operator's mistake, reported at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_LEN`].
    TooShort(usize),
    /// Longer than [`MAX_TOKEN_LEN`].
    TooLong(usize),
    /// Contains whitespace or control characters.
    BadCharacter,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::TooShort(n) => write!(
                f,
                "admin token has {n} bytes; use at least {MIN_TOKEN_LEN} random bytes (e.g. `head -c 24 /dev/urandom | base64`)"
            ),
            TokenError::TooLong(n) => write!(
                f,
                "admin token has {n} bytes; at most {MAX_TOKEN_LEN} are allowed"
            ),
            TokenError::BadCharacter => {
                write!(f, "admin token contains whitespace or control characters")
            }
        }
    }
}

impl std::error::Error for TokenError {}

/// Why a request for an admin path is refused, and how to answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denied {
    /// Public listener and no admin token configured: answer 404 (do not reveal the page).
    NotExposed,
    /// A credential is needed and none (or a wrong one) was sent: answer 401 with
    /// [`Denied::www_authenticate`].
    Unauthorized,
}

impl Denied {
    /// HTTP status code and reason phrase.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Denied::NotExposed => (404, "Not Found"),
            Denied::Unauthorized => (401, "Unauthorized"),
        }
    }

    /// The `WWW-Authenticate` header value to send with the 401, if any.
    pub fn www_authenticate(self) -> Option<&'static str> {
        match self {
            Denied::NotExposed => None,
            Denied::Unauthorized => Some("Basic realm=\"fastpubsub admin\", charset=\"UTF-8\""),
        }
    }

    /// A plain-text body that says what is wrong and what to do.
    pub fn body(self) -> &'static str {
        match self {
            Denied::NotExposed => "not found\n",
            Denied::Unauthorized => {
                "admin credential required: send `Authorization: Bearer <admin token>` or log in as user `admin` with the admin token\n"
            }
        }
    }
}

/// The admin access policy of one relay.
#[derive(Clone)]
pub struct AdminAccess {
    token: Option<Vec<u8>>,
    require_token_on_admin_listener: bool,
}

impl fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("AdminAccess")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field(
                "require_token_on_admin_listener",
                &self.require_token_on_admin_listener,
            )
            .finish()
    }
}

impl AdminAccess {
    /// The default: admin paths only on the admin listener, no credential.
    pub fn loopback_only() -> Self {
        AdminAccess {
            token: None,
            require_token_on_admin_listener: false,
        }
    }

    /// With an admin token: also served on the public listener to requests carrying it. If
    /// `everywhere` is set, the admin listener asks for it too (for an admin listener bound
    /// to a non-loopback address).
    pub fn with_token(token: &str, everywhere: bool) -> Result<Self, TokenError> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(token.len()));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong(token.len()));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenError::BadCharacter);
        }
        Ok(AdminAccess {
            token: Some(token.as_bytes().to_vec()),
            require_token_on_admin_listener: everywhere,
        })
    }

    /// Decides one request for an admin path. `authorization` is the raw `Authorization`
    /// header value, if the request had one.
    pub fn check(&self, listener: Listener, authorization: Option<&str>) -> Result<(), Denied> {
        match (listener, &self.token) {
            (Listener::Admin, _) if !self.require_token_on_admin_listener => Ok(()),
            (Listener::Public, None) => Err(Denied::NotExposed),
            (_, None) => Ok(()), // unreachable by construction: `everywhere` needs a token
            (_, Some(token)) => match authorization {
                Some(h) if h.len() <= MAX_AUTH_HEADER_LEN && credential_matches(h, token) => Ok(()),
                _ => Err(Denied::Unauthorized),
            },
        }
    }
}

/// The admin rule as the edge port's gate for its admin-only pages (`/stats`, …): the same
/// credential as the admin paths there.
impl crate::rest::AdminGate for AdminAccess {
    fn admit(&self, req: &crate::rest::HttpRequest) -> Result<(), crate::rest::HttpResponse> {
        self.check(Listener::Public, req.header("authorization"))
            .map_err(|d| {
                if d == Denied::NotExposed {
                    // No admin token: say where the counters are instead of a bare 404.
                    return crate::rest::AdminGate::admit(&crate::rest::NoAdmin, req)
                        .err()
                        .unwrap_or_else(|| crate::rest::HttpResponse::text(404, d.body().into()));
                }
                let mut r = crate::rest::HttpResponse::text(d.status().0, d.body().to_string());
                if let Some(h) = d.www_authenticate() {
                    r.headers.push(("WWW-Authenticate", h.to_string()));
                }
                r
            })
    }
}

fn credential_matches(header: &str, token: &[u8]) -> bool {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        ct_eq(rest.as_bytes(), token)
    } else if scheme.eq_ignore_ascii_case("basic") {
        match base64_decode(rest) {
            Some(decoded) => {
                let mut expected = Vec::with_capacity(BASIC_USER.len() + 1 + token.len());
                expected.extend_from_slice(BASIC_USER.as_bytes());
                expected.push(b':');
                expected.extend_from_slice(token);
                ct_eq(&decoded, &expected)
            }
            None => false,
        }
    } else {
        false
    }
}

/// Compares without an early exit on the first differing byte (the length is not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard base64 with padding; `None` on any invalid input.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let chunks = s.len() / 4;
    for (i, chunk) in s.chunks_exact(4).enumerate() {
        let last = i + 1 == chunks;
        let pad = match chunk {
            [_, _, b'=', b'='] if last => 2,
            [_, _, _, b'='] if last => 1,
            _ => 0,
        };
        let mut n = 0u32;
        for (j, &c) in chunk.iter().enumerate() {
            let v = if j >= 4 - pad { 0 } else { val(c)? };
            n = (n << 6) | v;
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(bytes.get(1..4 - pad)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-admin-token-0123";

    fn basic(user_pass: &str) -> String {
        // Tiny encoder for the test only.
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::from("Basic ");
        for chunk in user_pass.as_bytes().chunks(3) {
            let b = [
                chunk.first().copied().unwrap_or(0),
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for k in 0..4 {
                if k <= chunk.len() {
                    s.push(T[((n >> (18 - 6 * k)) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    #[test]
    fn admin_paths() {
        for p in [
            "/v1/status",
            "/v1/mesh",
            "/metrics",
            "/dashboard",
            "/dashboard/",
            "/dashboard/x.js",
            "/v1/mesh?pairs=none",
        ] {
            assert!(is_admin_path(p), "{p}");
        }
        for p in [
            "/",
            "/ping",
            "/ws",
            "/v1/tickets",
            "/dashboardx",
            "/metricsx",
            "/v1/statusx",
        ] {
            assert!(!is_admin_path(p), "{p}");
        }
    }

    #[test]
    fn default_is_loopback_listener_only() {
        let a = AdminAccess::loopback_only();
        assert_eq!(a.check(Listener::Admin, None), Ok(()));
        assert_eq!(a.check(Listener::Public, None), Err(Denied::NotExposed));
        assert_eq!(
            a.check(Listener::Public, Some(&format!("Bearer {TOKEN}"))),
            Err(Denied::NotExposed)
        );
        assert_eq!(Denied::NotExposed.status().0, 404);
    }

    #[test]
    fn token_opens_the_public_listener() {
        let a = AdminAccess::with_token(TOKEN, false).expect("valid token");
        assert_eq!(a.check(Listener::Admin, None), Ok(()));
        assert_eq!(a.check(Listener::Public, None), Err(Denied::Unauthorized));
        assert_eq!(
            a.check(Listener::Public, Some(&format!("Bearer {TOKEN}"))),
            Ok(())
        );
        assert_eq!(
            a.check(Listener::Public, Some(&format!("bearer   {TOKEN} "))),
            Ok(())
        );
        assert_eq!(
            a.check(Listener::Public, Some(&basic(&format!("admin:{TOKEN}")))),
            Ok(())
        );
        for bad in [
            format!("Bearer {TOKEN}x"),
            format!("Bearer {}", &TOKEN[1..]),
            "Bearer".to_string(),
            basic(&format!("root:{TOKEN}")),
            basic("admin:wrong-token-wrong-token"),
            "Basic !!!!".to_string(),
            "Basic YWRtaW4".to_string(),
            format!("Token {TOKEN}"),
            format!("Bearer {}", "a".repeat(MAX_AUTH_HEADER_LEN)),
        ] {
            assert_eq!(
                a.check(Listener::Public, Some(&bad)),
                Err(Denied::Unauthorized),
                "{bad}"
            );
        }
        let d = Denied::Unauthorized;
        assert_eq!(d.status().0, 401);
        assert!(
            d.www_authenticate()
                .is_some_and(|h| h.starts_with("Basic "))
        );
    }

    #[test]
    fn everywhere_guards_the_admin_listener_too() {
        let a = AdminAccess::with_token(TOKEN, true).expect("valid token");
        assert_eq!(a.check(Listener::Admin, None), Err(Denied::Unauthorized));
        assert_eq!(
            a.check(Listener::Admin, Some(&format!("Bearer {TOKEN}"))),
            Ok(())
        );
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert_eq!(
            AdminAccess::with_token("short", false).err(),
            Some(TokenError::TooShort(5))
        );
        assert_eq!(
            AdminAccess::with_token("has a space in it!!", false).err(),
            Some(TokenError::BadCharacter)
        );
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            AdminAccess::with_token(&long, false).err(),
            Some(TokenError::TooLong(MAX_TOKEN_LEN + 1))
        );
        assert!(!format!("{:?}", AdminAccess::with_token(TOKEN, false)).contains(TOKEN));
    }

    #[test]
    fn base64_roundtrip_vectors() {
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(enc).as_deref(), Some(dec.as_bytes()), "{enc}");
        }
        for bad in ["Zg=", "Z===", "Zm9v!A==", "=AAA", "Zg==Zg=="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }
}
