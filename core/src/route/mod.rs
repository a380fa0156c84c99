//! Latency distance-vector routing as a sans-IO state machine.
