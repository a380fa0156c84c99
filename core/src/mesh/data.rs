//! Forwarded publishes.
//!
//! A publish entering the mesh at relay X becomes one [`Data`] per next hop, listing the
//! destination relays reached through that hop; each relay delivers locally if it is
//! a destination and re-splits the rest by its own next hops. `hop_limit` drops a message
//! that loops while routes change; `(origin, msg_id)` lets every relay drop duplicates.

use serde::{Deserialize, Serialize};

use super::{
    MAX_CHANNEL, MAX_NAME, MAX_TENANT, TAG_LEN, U64_LEN, bytes_len, check_len, check_name,
    varint_len,
};
use crate::frame::Mode;
use crate::route::RelayId;

/// Most destination relays listed in one [`Data`].
pub const MAX_DESTINATIONS: usize = 32;
/// Largest payload, in bytes (the client contract's [`crate::limits::MAX_PAYLOAD_LEN`]).
pub use crate::limits::MAX_PAYLOAD_LEN as MAX_PAYLOAD;
/// Largest hop limit a relay may set.
pub const MAX_HOP_LIMIT: u8 = 16;

/// The delivery mode on the wire: the client contract's [`Mode`], encoded as the index of
/// its variant (0 broadcast, 1 low-latency, 2 random), as postcard encodes a unit enum.
mod wire_mode {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::frame::Mode;

    #[derive(Serialize, Deserialize)]
    enum Wire {
        Broadcast,
        LowLatency,
        Random,
    }

    pub(super) fn serialize<S: Serializer>(m: &Mode, s: S) -> Result<S::Ok, S::Error> {
        match m {
            Mode::Broadcast => Wire::Broadcast,
            Mode::LowLatency => Wire::LowLatency,
            Mode::Random => Wire::Random,
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        Ok(match Wire::deserialize(d)? {
            Wire::Broadcast => Mode::Broadcast,
            Wire::LowLatency => Mode::LowLatency,
            Wire::Random => Mode::Random,
        })
    }
}

/// A publish travelling through the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data<'a> {
    /// The relay where the publish entered the mesh.
    pub origin: &'a str,
    /// The origin's id for this message (unique per origin, increasing).
    pub msg_id: u64,
    /// Hops left; a relay receiving 0 delivers locally but does not forward.
    pub hop_limit: u8,
    /// Delivery mode (the client's).
    #[serde(with = "wire_mode")]
    pub mode: Mode,
    /// Relays this copy must reach (deliver locally, or forward).
    pub destinations: heapless::Vec<RelayId, MAX_DESTINATIONS>,
    /// The tenant.
    pub tenant: &'a str,
    /// The (concrete) channel.
    pub channel: &'a str,
    /// The payload.
    pub payload: &'a [u8],
}

impl Data<'_> {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize = TAG_LEN
        + bytes_len(MAX_NAME)
        + U64_LEN
        + 1
        + 1
        + varint_len(MAX_DESTINATIONS)
        + MAX_DESTINATIONS * RelayId::ENCODED_LEN
        + bytes_len(MAX_TENANT)
        + bytes_len(MAX_CHANNEL)
        + bytes_len(MAX_PAYLOAD);

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        check_name(self.origin, "data: bad origin name")?;
        if self.destinations.is_empty() {
            return Err("data: no destination");
        }
        if self.hop_limit > MAX_HOP_LIMIT {
            return Err("data: hop limit too large");
        }
        check_len(self.tenant, MAX_TENANT, "data: tenant too long")?;
        check_len(self.channel, MAX_CHANNEL, "data: channel too long")?;
        if self.tenant.is_empty() || self.channel.is_empty() {
            return Err("data: empty tenant or channel");
        }
        if self.payload.len() > MAX_PAYLOAD {
            return Err("data: payload too long");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{roundtrip, s};
    use super::super::{EncodeError, Message, encode};
    use super::*;

    #[test]
    fn worst_case() {
        let mut destinations = heapless::Vec::new();
        for _ in 0..MAX_DESTINATIONS {
            let _ = destinations.push(RelayId(u64::MAX));
        }
        let n = roundtrip(&Message::Data(Data {
            origin: s(MAX_NAME, b'z'),
            msg_id: u64::MAX,
            hop_limit: MAX_HOP_LIMIT,
            mode: Mode::Random,
            destinations,
            tenant: s(MAX_TENANT, b'a'),
            channel: s(MAX_CHANNEL, b'z'),
            payload: s(MAX_PAYLOAD, b'a').as_bytes(),
        }));
        assert_eq!(n, Data::MAX_LEN);
        assert_eq!(Message::MAX_LEN, Data::MAX_LEN);
    }

    #[test]
    fn mode_is_encoded_as_before() {
        // The byte after hop_limit is the mode: 0 broadcast, 1 low-latency, 2 random.
        for (mode, byte) in [
            (Mode::Broadcast, 0u8),
            (Mode::LowLatency, 1),
            (Mode::Random, 2),
        ] {
            let mut destinations = heapless::Vec::new();
            let _ = destinations.push(RelayId(7));
            let msg = Message::Data(Data {
                origin: "t",
                msg_id: 1,
                hop_limit: 4,
                mode,
                destinations,
                tenant: "acme",
                channel: "c",
                payload: &[],
            });
            let mut buf = [0u8; 64];
            let n = encode(&msg, &mut buf).map(|b| b.len()).unwrap_or(0);
            // tag, origin (len + 1), msg_id (1), hop_limit (1), mode
            assert_eq!(buf.get(..n).and_then(|b| b.get(5)), Some(&byte), "{mode:?}");
            roundtrip(&msg);
        }
    }

    #[test]
    fn rules() {
        let mut destinations = heapless::Vec::new();
        let _ = destinations.push(RelayId(7));
        let good = Data {
            origin: "t",
            msg_id: 1,
            hop_limit: 4,
            mode: Mode::LowLatency,
            destinations,
            tenant: "acme",
            channel: "c",
            payload: &[],
        };
        roundtrip(&Message::Data(good.clone()));
        let mut buf = [0u8; 256];
        for bad in [
            Data {
                hop_limit: MAX_HOP_LIMIT + 1,
                ..good.clone()
            },
            Data {
                destinations: heapless::Vec::new(),
                ..good.clone()
            },
            Data {
                channel: "",
                ..good.clone()
            },
            Data {
                origin: "T",
                ..good.clone()
            },
        ] {
            assert!(matches!(
                encode(&Message::Data(bad), &mut buf),
                Err(EncodeError::Invalid(_))
            ));
        }
    }
}
