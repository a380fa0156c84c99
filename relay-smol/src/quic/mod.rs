//! QUIC driver: quinn-proto on an async-io UDP socket.
