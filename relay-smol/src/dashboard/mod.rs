//! The operator's view of the mesh: the `/dashboard` page, the `GET /v1/mesh` picture behind
//! it, and the admin access rule that guards both (and `/v1/status`, `/metrics`).
//!
//! - [`view`]: [`view::MeshState`], fed with relay summaries, builds the `/v1/mesh` document.
//! - [`access`]: [`access::AdminAccess::check`], the admin access rule.
//! - [`announce`]: the compact wire form of relay summaries for the mesh-wide announcements.
//! - [`routes`]: [`routes::AdminRoutes::handle`], every admin path as one function the HTTP
//!   layers call (it applies the access rule first).
//! - [`server`]: the admin listener (loopback by default) serving those routes.
//! - [`serve`]: the page's static assets, embedded in the binary (cargo feature `dashboard`,
//!   on by default). With the feature off, `serve` answers `None` and the page costs nothing.
//!
//! The wiring into a running relay is `crate::app::admin`.
//!
//! The page is plain JavaScript with no third-party code and requests nothing but
//! `/dashboard/*` and `/v1/mesh` from the relay that served it.

pub mod access;
pub mod announce;
pub mod routes;
pub mod server;
pub mod view;

/// Content type of the JSON documents (`/v1/mesh`, `/v1/status`).
pub const JSON_CONTENT_TYPE: &str = "application/json";

#[cfg(feature = "dashboard")]
mod assets {
    pub(super) const INDEX_HTML: &[u8] = include_bytes!("assets/index.html");
    pub(super) const APP_JS: &[u8] = include_bytes!("assets/app.js");
    pub(super) const STYLE_CSS: &[u8] = include_bytes!("assets/style.css");
    /// Natural Earth 110m land as one SVG path (see data/world/SOURCE.md).
    pub(super) const LAND_PATH: &[u8] = include_bytes!("../../../data/world/land-110m.path");
}

/// The embedded asset for a request path, as `(content type, body)`, or `None` when the path
/// is not a dashboard asset (or the `dashboard` feature is off). Query strings are ignored.
pub fn serve(path: &str) -> Option<(&'static str, &'static [u8])> {
    #[cfg(feature = "dashboard")]
    {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        match path {
            "/dashboard" | "/dashboard/" | "/dashboard/index.html" => {
                Some(("text/html; charset=utf-8", assets::INDEX_HTML))
            }
            "/dashboard/app.js" => Some(("text/javascript; charset=utf-8", assets::APP_JS)),
            "/dashboard/style.css" => Some(("text/css; charset=utf-8", assets::STYLE_CSS)),
            "/dashboard/land.path" => Some(("text/plain; charset=utf-8", assets::LAND_PATH)),
            _ => None,
        }
    }
    #[cfg(not(feature = "dashboard"))]
    {
        let _ = path;
        None
    }
}

/// Total bytes of the embedded page (HTML + JS + CSS + land outline); 0 without the feature.
pub fn embedded_size() -> usize {
    #[cfg(feature = "dashboard")]
    {
        assets::INDEX_HTML.len()
            + assets::APP_JS.len()
            + assets::STYLE_CSS.len()
            + assets::LAND_PATH.len()
    }
    #[cfg(not(feature = "dashboard"))]
    {
        0
    }
}

/// Security headers for every admin response: no framing, no sniffing, and a content security
/// policy that only lets the page talk to its own relay.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
];

#[cfg(all(test, feature = "dashboard"))]
mod tests {
    use super::*;

    #[test]
    fn serves_every_asset_and_nothing_else() {
        for (p, ty) in [
            ("/dashboard", "text/html"),
            ("/dashboard/", "text/html"),
            ("/dashboard?x=1", "text/html"),
            ("/dashboard/app.js", "text/javascript"),
            ("/dashboard/style.css", "text/css"),
            ("/dashboard/land.path", "text/plain"),
        ] {
            let (t, body) = serve(p).unwrap_or(("none", b""));
            assert!(t.starts_with(ty), "{p}: {t}");
            assert!(!body.is_empty(), "{p}");
        }
        for p in [
            "/",
            "/dashboard/../Cargo.toml",
            "/dashboard/app.js/",
            "/dashboardx",
            "/v1/mesh",
        ] {
            assert!(serve(p).is_none(), "{p}");
        }
    }

    #[test]
    fn page_requests_nothing_but_the_relay() {
        for (_, body) in ["/dashboard", "/dashboard/app.js", "/dashboard/style.css"]
            .iter()
            .filter_map(|p| serve(p))
        {
            // The SVG namespace URI is an identifier, never fetched.
            let text = String::from_utf8_lossy(body).replace("http://www.w3.org/2000/svg", "");
            for bad in [
                "http:", "https:", "//cdn", "@import", "url(", "ws://", "wss://",
            ] {
                assert!(
                    !text.contains(bad),
                    "external reference {bad:?} in an asset"
                );
            }
        }
        let html = String::from_utf8_lossy(serve("/dashboard").map_or(&b""[..], |a| a.1));
        assert!(html.contains("src=\"/dashboard/app.js\""));
        assert!(html.contains("href=\"/dashboard/style.css\""));
    }
}
