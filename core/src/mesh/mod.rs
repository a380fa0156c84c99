//! Relay-to-relay wire messages (postcard).
