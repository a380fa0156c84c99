//! Relay mesh: links, probing, routing, interest, forwarding.
