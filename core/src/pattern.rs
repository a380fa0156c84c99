//! Channels and patterns (filled in by the edge work).
