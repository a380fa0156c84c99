//! `fastpubsub-relay`: the relay library behind the `fastpubsub-relay` binary.
