//! Relay side of access tickets: issuing, status store, verified-ticket cache.
