//! The `fastpubsub-relay` binary.
fn main() {}
