//! Grant checks (publish/subscribe per tenant, containment edge cases) and connection
//! restrictions (IP masks, origins, protocols).

use core::net::IpAddr;

use fastpubsub_core::ticket::{AccessDenied, Claims, ClaimsSpec, Grant, IpMask, Protocols};

fn with<R>(grants: &[Grant<'_>], f: impl FnOnce(&Claims<'_>) -> R) -> R {
    let spec = ClaimsSpec {
        ticket_id: [1; 16],
        issued_at: 100,
        expires_at: 200,
        grants,
        ip_masks: &[],
        origins: &[],
        protocols: Protocols::ALL,
        ingress_kb_per_sec: 8,
        egress_kb_per_sec: 8,
    };
    let claims = Claims::new(&spec).expect("valid claims");
    f(&claims)
}

fn g<'a>(tenants: &[&'a str], publish: &[&'a str], subscribe: &[&'a str]) -> Grant<'a> {
    Grant::new(tenants, publish, subscribe).expect("within caps")
}

#[test]
fn publish_matrix() {
    let grants = [
        g(&["t1"], &["public.#", "rooms.*.chat"], &[]),
        g(&["t2"], &["*"], &[]),
    ];
    with(&grants, |c| {
        let table: &[(&str, &str, bool)] = &[
            ("t1", "public", true),
            ("t1", "public.demo", true),
            ("t1", "public.chat.room1", true),
            ("t1", "publicx", false),
            ("t1", "private.x", false),
            ("t1", "rooms.a.chat", true),
            ("t1", "rooms.a.b.chat", false),
            ("t1", "rooms.chat", false),
            ("t2", "anything", true),
            ("t2", "two.segments", false),
            ("t2", "public.demo", false),
            ("t3", "public.demo", false),
            ("T1", "public.demo", false),
        ];
        for (tenant, channel, want) in table {
            assert_eq!(
                c.may_publish(tenant, channel),
                *want,
                "pub {tenant}:{channel}"
            );
        }
    });
}

#[test]
fn subscribe_matrix_with_containment_edges() {
    let grants = [
        g(&["t1", "shared"], &[], &["public.#"]),
        g(&["t2"], &[], &["public.*"]),
        g(&["t3"], &[], &["*"]),
        g(&["t4"], &[], &["#"]),
        g(&["t5"], &[], &["a.*.c"]),
    ];
    let table: &[(&str, &str, bool)] = &[
        // `public.#` contains everything under public, and public itself.
        ("t1", "public", true),
        ("t1", "public.#", true),
        ("t1", "public.*", true),
        ("t1", "public.a.b", true),
        ("t1", "public.*.x.#", true),
        ("t1", "#", false),
        ("t1", "*", false),
        ("t1", "private.#", false),
        ("shared", "public.x", true),
        // `public.*` is exactly one segment below public.
        ("t2", "public.x", true),
        ("t2", "public.*", true),
        ("t2", "public.#", false),
        ("t2", "public", false),
        ("t2", "public.x.y", false),
        // `*` is one segment; `#` is anything.
        ("t3", "x", true),
        ("t3", "*", true),
        ("t3", "#", false),
        ("t3", "x.y", false),
        ("t4", "#", true),
        ("t4", "*", true),
        ("t4", "x.y.z", true),
        ("t5", "a.b.c", true),
        ("t5", "a.*.c", true),
        ("t5", "a.#", false),
        ("t5", "a.b.c.d", false),
        // Tenant mismatch: a grant never leaks to another tenant.
        ("t2", "x", false),
        ("nobody", "public.x", false),
    ];
    // More grants than one ticket holds: check them as two tickets.
    for chunk in grants.chunks(4) {
        with(chunk, |c| {
            for (tenant, pattern, want) in table {
                let here = chunk.iter().any(|g| g.tenants().contains(tenant));
                let want = *want && here;
                assert_eq!(
                    c.may_subscribe(tenant, pattern),
                    want,
                    "sub {tenant}:{pattern}"
                );
            }
            // Subscribing is not publishing.
            assert!(!c.may_publish("t1", "public.x"));
        });
    }
}

#[test]
fn access_restrictions() {
    let grants = [g(&["t"], &["a"], &["a"])];
    let masks = [
        IpMask::parse("10.0.0.0/8").expect("mask"),
        IpMask::parse("2001:db8::/32").expect("mask"),
    ];
    let spec = ClaimsSpec {
        ticket_id: [1; 16],
        issued_at: 100,
        expires_at: 200,
        grants: &grants,
        ip_masks: &masks,
        origins: &["https://app.example", "http://localhost:8080/"],
        protocols: Protocols::WEBSOCKET,
        ingress_kb_per_sec: 8,
        egress_kb_per_sec: 8,
    };
    let c = Claims::new(&spec).expect("valid");
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let ws = Protocols::WEBSOCKET;
    assert_eq!(
        c.check_access(ip("10.1.2.3"), Some("https://app.example"), ws),
        Ok(())
    );
    assert_eq!(
        c.check_access(ip("2001:db8::9"), Some("HTTPS://APP.EXAMPLE/"), ws),
        Ok(())
    );
    assert_eq!(
        c.check_access(ip("10.1.2.3"), Some("http://localhost:8080"), ws),
        Ok(())
    );
    assert_eq!(
        c.check_access(ip("11.0.0.1"), Some("https://app.example"), ws),
        Err(AccessDenied::Ip)
    );
    assert_eq!(
        c.check_access(ip("127.0.0.1"), None, ws),
        Err(AccessDenied::Ip)
    );
    assert_eq!(
        c.check_access(ip("10.0.0.1"), Some("https://evil.example"), ws),
        Err(AccessDenied::Origin)
    );
    assert_eq!(
        c.check_access(ip("10.0.0.1"), Some("https://app.example.evil"), ws),
        Err(AccessDenied::Origin)
    );
    assert_eq!(
        c.check_access(ip("10.0.0.1"), None, ws),
        Err(AccessDenied::Origin)
    );
    assert_eq!(
        c.check_access(
            ip("10.0.0.1"),
            Some("https://app.example"),
            Protocols::WEBTRANSPORT
        ),
        Err(AccessDenied::Protocol)
    );

    // No restrictions: anything goes.
    with(&grants, |open| {
        assert_eq!(open.check_access(ip("203.0.113.9"), None, ws), Ok(()));
        assert_eq!(
            open.check_access(ip("::1"), Some("https://x"), Protocols::WEBTRANSPORT),
            Ok(())
        );
    });
}
