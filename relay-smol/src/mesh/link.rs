//! How the mesh names a link: [`LinkId`] (the driver's handle for one QUIC connection) and
//! which side opened it ([`LinkSide`]). The mesh never looks inside either; the driver
//! (or the virtual-time harness) hands them out.

/// One link (one QUIC connection, handshaking or up), as the driver numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub usize);

/// Which side opened a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSide {
    /// This relay dialled it (the QUIC client).
    Dialled,
    /// The peer dialled it (the QUIC server side).
    Accepted,
}

impl LinkSide {
    /// `"out"` or `"in"`, as the status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dialled => "out",
            Self::Accepted => "in",
        }
    }
}
