//! REST endpoints on the edge port.
