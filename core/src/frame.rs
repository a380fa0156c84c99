//! LLPS v0.1 client frame codec (filled in by the edge work).
