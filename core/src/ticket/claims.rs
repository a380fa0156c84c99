//! The claims of a ticket: who may publish and subscribe to what, from where, until when.
//!
//! [`Claims`] borrows its strings from the decoded claims bytes (zero-copy), so a decoded
//! ticket costs no allocation and its size is fixed by the caps in [`super::limits`].

use core::net::IpAddr;

use heapless::Vec;
use serde::{Deserialize, Serialize};

use super::error::{AccessDenied, Cap, IssueError, Malformed, TicketError};
use super::limits::{
    FORMAT_VERSION, MAX_CLOCK_SKEW_SECS, MAX_GRANTS, MAX_IP_MASKS, MAX_KB_PER_SEC, MAX_ORIGIN_LEN,
    MAX_ORIGINS, MAX_PATTERNS_PER_GRANT, MAX_TENANT_LEN, MAX_TENANTS_PER_GRANT, MAX_TTL_SECS,
    MIN_KB_PER_SEC, TICKET_ID_LEN,
};
use crate::pattern::{self, MAX_NAME_LEN};

/// Transports a ticket may be used over (a bitset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Protocols(u8);

impl Protocols {
    /// WebSocket (`/ws`).
    pub const WEBSOCKET: Self = Self(1);
    /// WebTransport.
    pub const WEBTRANSPORT: Self = Self(2);
    /// Both; what a request without `allow_protocols` gets.
    pub const ALL: Self = Self(3);
    /// No protocol (refused at issue).
    pub const NONE: Self = Self(0);

    /// The union of two sets.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// True when every protocol of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// The raw bits (bit 0 WebSocket, bit 1 WebTransport).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Parses one protocol name of the REST API (`websocket`, `webtransport`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "websocket" => Some(Self::WEBSOCKET),
            "webtransport" => Some(Self::WEBTRANSPORT),
            _ => None,
        }
    }
}

/// An IP network (CIDR) in fixed binary form: the address with host bits cleared, and the
/// prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpMask {
    v6: bool,
    addr: [u8; 16],
    prefix: u8,
}

impl IpMask {
    /// Parses `ADDR` (a single host) or `ADDR/PREFIX`, IPv4 or IPv6. Host bits below the
    /// prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn parse(text: &str) -> Result<Self, IssueError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| IssueError::InvalidIpMask)?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
                p.parse::<u8>().map_err(|_| IssueError::InvalidIpMask)?
            }
            Some(_) => return Err(IssueError::InvalidIpMask),
        };
        if prefix > max {
            return Err(IssueError::InvalidIpMask);
        }
        let (v6, mut bytes) = to_bytes(ip);
        mask_bytes(&mut bytes, prefix);
        Ok(Self {
            v6,
            addr: bytes,
            prefix,
        })
    }

    /// True when `ip` is inside this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// is compared as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (v6, mut bytes) = to_bytes(ip);
        if v6 != self.v6 || self.prefix > if v6 { 128 } else { 32 } {
            return false;
        }
        mask_bytes(&mut bytes, self.prefix);
        bytes == self.addr
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        if self.v6 {
            IpAddr::from(self.addr)
        } else {
            let [a, b, c, d, ..] = self.addr;
            IpAddr::from([a, b, c, d])
        }
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl core::fmt::Display for IpMask {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix)
    }
}

fn to_bytes(ip: IpAddr) -> (bool, [u8; 16]) {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            for (d, s) in b.iter_mut().zip(v4.octets()) {
                *d = s;
            }
            (false, b)
        }
        IpAddr::V6(v6) => (true, v6.octets()),
    }
}

fn mask_bytes(bytes: &mut [u8; 16], prefix: u8) {
    for (i, b) in bytes.iter_mut().enumerate() {
        let start = i * 8;
        let keep = usize::from(prefix).saturating_sub(start).min(8);
        // keep = number of leading bits of this byte inside the prefix.
        let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        *b &= mask;
    }
}

/// One tenant grant: the tenants it applies to and the patterns allowed there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant<'a> {
    #[serde(borrow)]
    tenants: Vec<&'a str, MAX_TENANTS_PER_GRANT>,
    #[serde(borrow)]
    publish: Vec<&'a str, MAX_PATTERNS_PER_GRANT>,
    #[serde(borrow)]
    subscribe: Vec<&'a str, MAX_PATTERNS_PER_GRANT>,
}

impl<'a> Grant<'a> {
    /// Builds a grant, checking the caps (not the syntax; [`Claims::new`] does that).
    pub fn new(
        tenants: &[&'a str],
        publish: &[&'a str],
        subscribe: &[&'a str],
    ) -> Result<Self, IssueError> {
        Ok(Self {
            tenants: Vec::from_slice(tenants)
                .map_err(|_| IssueError::OverCap(Cap::TenantsPerGrant))?,
            publish: Vec::from_slice(publish)
                .map_err(|_| IssueError::OverCap(Cap::PubPatternsPerGrant))?,
            subscribe: Vec::from_slice(subscribe)
                .map_err(|_| IssueError::OverCap(Cap::SubPatternsPerGrant))?,
        })
    }

    /// Tenant ids this grant applies to.
    pub fn tenants(&self) -> &[&'a str] {
        &self.tenants
    }

    /// Patterns of channels that may be published to.
    pub fn publish(&self) -> &[&'a str] {
        &self.publish
    }

    /// Patterns that subscriptions must be contained in.
    pub fn subscribe(&self) -> &[&'a str] {
        &self.subscribe
    }

    fn has_tenant(&self, tenant: &str) -> bool {
        self.tenants.contains(&tenant)
    }
}

/// What a caller asks to be put in a ticket; [`Claims::new`] checks it against the caps
/// and the rules of the format.
#[derive(Debug, Clone)]
pub struct ClaimsSpec<'s, 'a> {
    /// Random ticket id (the caller supplies the randomness).
    pub ticket_id: [u8; TICKET_ID_LEN],
    /// Issue time, unix seconds ("now").
    pub issued_at: u64,
    /// Expiry, unix seconds; at most [`MAX_TTL_SECS`] after `issued_at`.
    pub expires_at: u64,
    /// The grants; at least one.
    pub grants: &'s [Grant<'a>],
    /// Allowed client networks; empty = any.
    pub ip_masks: &'s [IpMask],
    /// Allowed browser `Origin` values; empty = any (and none required).
    pub origins: &'s [&'a str],
    /// Allowed transports.
    pub protocols: Protocols,
    /// Ingress (client → relay) limit, KB/s.
    pub ingress_kb_per_sec: u32,
    /// Egress (relay → client) limit, KB/s.
    pub egress_kb_per_sec: u32,
}

/// The decoded, fixed-capacity claims of a ticket.
///
/// Obtained from [`super::verify`] (signature checked) or built with [`Claims::new`] for
/// [`super::issue`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims<'a> {
    version: u8,
    ticket_id: [u8; TICKET_ID_LEN],
    issued_at: u64,
    expires_at: u64,
    #[serde(borrow)]
    grants: Vec<Grant<'a>, MAX_GRANTS>,
    ip_masks: Vec<IpMask, MAX_IP_MASKS>,
    #[serde(borrow)]
    origins: Vec<&'a str, MAX_ORIGINS>,
    protocols: Protocols,
    ingress_kb_per_sec: u16,
    egress_kb_per_sec: u16,
}

fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TENANT_LEN
        && !t
            .chars()
            .any(|c| c == ':' || c.is_control() || c.is_whitespace())
}

fn kb(value: u32, ingress: bool) -> Result<u16, IssueError> {
    if (MIN_KB_PER_SEC..=MAX_KB_PER_SEC).contains(&value) {
        u16::try_from(value).map_err(|_| IssueError::KbPerSecOutOfRange { ingress, value })
    } else {
        Err(IssueError::KbPerSecOutOfRange { ingress, value })
    }
}

impl<'a> Claims<'a> {
    /// Builds claims from a request, refusing anything over a cap (naming it) or against the
    /// rules: TTL ≤ 24 h, valid tenant ids and patterns, KB/s in range, a non-empty
    /// protocol set, at least one grant with at least one tenant.
    pub fn new(spec: &ClaimsSpec<'_, 'a>) -> Result<Self, IssueError> {
        let claims = Self {
            version: FORMAT_VERSION,
            ticket_id: spec.ticket_id,
            issued_at: spec.issued_at,
            expires_at: spec.expires_at,
            grants: Vec::from_slice(spec.grants).map_err(|_| IssueError::OverCap(Cap::Grants))?,
            ip_masks: Vec::from_slice(spec.ip_masks)
                .map_err(|_| IssueError::OverCap(Cap::IpMasks))?,
            origins: Vec::from_slice(spec.origins)
                .map_err(|_| IssueError::OverCap(Cap::Origins))?,
            protocols: spec.protocols,
            ingress_kb_per_sec: kb(spec.ingress_kb_per_sec, true)?,
            egress_kb_per_sec: kb(spec.egress_kb_per_sec, false)?,
        };
        claims.validate()?;
        Ok(claims)
    }

    /// Checks every rule of the format (the caps hold by construction).
    pub(crate) fn validate(&self) -> Result<(), IssueError> {
        if self.expires_at <= self.issued_at {
            return Err(IssueError::ExpiresBeforeIssue);
        }
        let ttl_secs = self.expires_at - self.issued_at;
        if ttl_secs > MAX_TTL_SECS {
            return Err(IssueError::TtlTooLong { ttl_secs });
        }
        if self.grants.is_empty() {
            return Err(IssueError::NoGrants);
        }
        for (i, g) in self.grants.iter().enumerate() {
            if g.tenants.is_empty() {
                return Err(IssueError::GrantWithoutTenant { grant: i });
            }
            for t in &g.tenants {
                if t.len() > MAX_TENANT_LEN {
                    return Err(IssueError::OverCap(Cap::TenantLen));
                }
                if !valid_tenant(t) {
                    return Err(IssueError::InvalidTenant { grant: i });
                }
            }
            for (publish, list) in [(true, &g.publish), (false, &g.subscribe)] {
                for p in list.iter() {
                    if p.len() > MAX_NAME_LEN {
                        return Err(IssueError::OverCap(Cap::PatternLen));
                    }
                    pattern::validate_pattern(p).map_err(|why| IssueError::InvalidPattern {
                        grant: i,
                        publish,
                        why,
                    })?;
                }
            }
        }
        for o in &self.origins {
            if o.len() > MAX_ORIGIN_LEN {
                return Err(IssueError::OverCap(Cap::OriginLen));
            }
            if o.is_empty() || o.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(IssueError::InvalidOrigin);
            }
        }
        for m in &self.ip_masks {
            if m.prefix > if m.v6 { 128 } else { 32 } {
                return Err(IssueError::InvalidIpMask);
            }
        }
        if self.protocols.0 == 0 || self.protocols.0 & !Protocols::ALL.0 != 0 {
            return Err(IssueError::NoProtocols);
        }
        for (ingress, v) in [
            (true, self.ingress_kb_per_sec),
            (false, self.egress_kb_per_sec),
        ] {
            kb(u32::from(v), ingress)?;
        }
        Ok(())
    }

    /// Decodes claims bytes (without checking any signature: use [`super::verify`] for a
    /// presented ticket). Refuses an unknown version, anything over a cap, trailing bytes
    /// and claims that break the rules of the format.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, TicketError> {
        match bytes.first() {
            Some(&FORMAT_VERSION) => {}
            Some(&v) => return Err(TicketError::UnsupportedVersion(v)),
            None => return Err(TicketError::Malformed(Malformed::Claims)),
        }
        let (claims, rest) = postcard::take_from_bytes::<Self>(bytes)
            .map_err(|_| TicketError::Malformed(Malformed::Claims))?;
        if !rest.is_empty() {
            return Err(TicketError::Malformed(Malformed::Claims));
        }
        claims
            .validate()
            .map_err(|_| TicketError::Malformed(Malformed::Inconsistent))?;
        Ok(claims)
    }

    /// Encodes into `out`; `None` when it does not fit.
    pub fn encode<'o>(&self, out: &'o mut [u8]) -> Option<&'o mut [u8]> {
        postcard::to_slice(self, out).ok()
    }

    /// Format version.
    pub fn version(&self) -> u8 {
        self.version
    }
    /// The random ticket id; status records are keyed by it.
    pub fn ticket_id(&self) -> &[u8; TICKET_ID_LEN] {
        &self.ticket_id
    }
    /// Issue time, unix seconds.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
    /// Expiry as issued, unix seconds (a refresh may move it: see [`super::StatusTable`]).
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
    /// The tenant grants.
    pub fn grants(&self) -> &[Grant<'a>] {
        &self.grants
    }
    /// Allowed client networks; empty = any.
    pub fn ip_masks(&self) -> &[IpMask] {
        &self.ip_masks
    }
    /// Allowed browser origins; empty = any.
    pub fn origins(&self) -> &[&'a str] {
        &self.origins
    }
    /// Allowed transports.
    pub fn protocols(&self) -> Protocols {
        self.protocols
    }
    /// Ingress limit, KB/s.
    pub fn ingress_kb_per_sec(&self) -> u16 {
        self.ingress_kb_per_sec
    }
    /// Egress limit, KB/s.
    pub fn egress_kb_per_sec(&self) -> u16 {
        self.egress_kb_per_sec
    }

    /// Checks the time window against `now` and an `expires_at` (the issued one, or the
    /// one a refresh set).
    pub fn check_time(&self, now: u64, expires_at: u64) -> Result<(), TicketError> {
        if self.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(TicketError::NotYetValid {
                issued_at: self.issued_at,
            });
        }
        if now >= expires_at {
            return Err(TicketError::Expired {
                expired_at: expires_at,
            });
        }
        Ok(())
    }

    /// May this ticket publish to `channel` in `tenant`? True when some publish pattern of a
    /// grant listing `tenant` matches the channel.
    pub fn may_publish(&self, tenant: &str, channel: &str) -> bool {
        self.grants
            .iter()
            .filter(|g| g.has_tenant(tenant))
            .any(|g| g.publish.iter().any(|p| pattern::matches(p, channel)))
    }

    /// May this ticket subscribe to `pattern` in `tenant`? True when the pattern is
    /// contained in some subscribe pattern of a grant listing `tenant` (every channel it
    /// can match is allowed).
    pub fn may_subscribe(&self, tenant: &str, pattern: &str) -> bool {
        self.grants
            .iter()
            .filter(|g| g.has_tenant(tenant))
            .any(|g| g.subscribe.iter().any(|p| pattern::contains(p, pattern)))
    }

    /// Is a client at `ip` allowed? True when no mask is set or one contains it.
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.ip_masks.is_empty() || self.ip_masks.iter().any(|m| m.contains(ip))
    }

    /// Is a client with this `Origin` header allowed? True when no origin is set; otherwise
    /// the header must be present and equal (ASCII case-insensitively, ignoring one trailing
    /// `/`) to one of them.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        if self.origins.is_empty() {
            return true;
        }
        let Some(origin) = origin else { return false };
        let origin = origin.strip_suffix('/').unwrap_or(origin);
        self.origins.iter().any(|o| {
            let o = o.strip_suffix('/').unwrap_or(o);
            o.eq_ignore_ascii_case(origin)
        })
    }

    /// Checks the connection restrictions of the ticket: IP, origin and protocol.
    pub fn check_access(
        &self,
        ip: IpAddr,
        origin: Option<&str>,
        protocol: Protocols,
    ) -> Result<(), AccessDenied> {
        if !self.protocols.contains(protocol) {
            return Err(AccessDenied::Protocol);
        }
        if !self.ip_allowed(ip) {
            return Err(AccessDenied::Ip);
        }
        if !self.origin_allowed(origin) {
            return Err(AccessDenied::Origin);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_masks_v4_v6_and_mapped() {
        let m = IpMask::parse("10.1.2.3/8").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.addr(), IpAddr::from([10, 0, 0, 0]));
        assert!(m.contains(IpAddr::from([10, 200, 0, 1])));
        assert!(!m.contains(IpAddr::from([11, 0, 0, 1])));
        let mapped: IpAddr = "::ffff:10.9.9.9".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(m.contains(mapped));
        let host = IpMask::parse("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(host.prefix(), 32);
        assert!(host.contains(IpAddr::from([127, 0, 0, 1])));
        assert!(!host.contains(IpAddr::from([127, 0, 0, 2])));
        let v6 = IpMask::parse("2001:db8::/33").unwrap_or_else(|e| panic!("{e}"));
        assert!(v6.contains("2001:db8:7fff::1".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(!v6.contains("2001:db8:8000::1".parse().unwrap_or_else(|e| panic!("{e}"))));
        assert!(!v6.contains(IpAddr::from([10, 0, 0, 1])));
        let all = IpMask::parse("0.0.0.0/0").unwrap_or_else(|e| panic!("{e}"));
        assert!(all.contains(IpAddr::from([1, 2, 3, 4])));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x/8",
            "10.0.0/8",
            "10.0.0.0/08x",
        ] {
            assert_eq!(
                IpMask::parse(bad),
                Err(IssueError::InvalidIpMask),
                "{bad:?}"
            );
        }
    }
}
