//! WebSocket/HTTP edge: listener, handshake, per-connection tasks.
