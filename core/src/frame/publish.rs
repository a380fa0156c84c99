//! Client → edge binary publish frames, v1 and v2 (spec section 3).

use core::fmt;

use super::FrameError;
use super::limits::{MAX_NAME_LEN, MAX_PAYLOAD_LEN, PUBLISH_V2_HEADER_LEN, PUBLISH_V2_TAG};
use super::str16::read_str16;
use super::validate_tenant;

/// How a publish is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// Every matching subscriber (v1, or v2 mode 0).
    Broadcast,
    /// Exactly one subscriber, on the nearest relay that has one (v2 mode 1).
    LowLatency,
    /// Exactly one subscriber, on a random relay that has one (v2 mode 2).
    Random,
}

impl Mode {
    /// The v2 mode byte of this mode.
    pub fn to_byte(self) -> u8 {
        match self {
            Mode::Broadcast => 0,
            Mode::LowLatency => 1,
            Mode::Random => 2,
        }
    }

    /// The mode for a v2 mode byte.
    pub fn from_byte(mode: u8) -> Result<Mode, FrameError> {
        match mode {
            0 => Ok(Mode::Broadcast),
            1 => Ok(Mode::LowLatency),
            2 => Ok(Mode::Random),
            other => Err(FrameError::UnknownMode { mode: other }),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Broadcast => "broadcast",
            Mode::LowLatency => "low-latency",
            Mode::Random => "random",
        })
    }
}

/// Which publish layout a frame used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Version {
    /// `str16 tenant | str16 channel | payload`.
    V1,
    /// `0x02 | mode | str16 tenant | str16 channel | payload`.
    V2,
}

/// A validated, zero-copy view of a publish frame.
///
/// [`Publish::new_checked`] validates the layout, the UTF-8 of tenant and channel, the
/// tenant rules and the length limits; after that the accessors cannot fail. Whether the
/// channel is a valid concrete channel (segments, no wildcards) is the `pattern` module's
/// business and is left to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    version: Version,
    mode: Mode,
    tenant: &'a str,
    channel: &'a str,
    payload: &'a [u8],
}

impl<'a> Publish<'a> {
    /// Parses and validates a binary frame as a v1 or v2 publish.
    ///
    /// A leading `0x02` means v2 (a v1 frame starts with the high byte of a tenant length,
    /// which is `0x00` for any tenant within the limit).
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, FrameError> {
        let (version, mode, mut pos) = match buf.first() {
            None => {
                return Err(FrameError::Truncated {
                    field: "tenant length",
                });
            }
            Some(&PUBLISH_V2_TAG) => {
                let mode_byte = *buf.get(1).ok_or(FrameError::Truncated { field: "mode" })?;
                (
                    Version::V2,
                    Mode::from_byte(mode_byte)?,
                    PUBLISH_V2_HEADER_LEN,
                )
            }
            Some(_) => (Version::V1, Mode::Broadcast, 0),
        };
        let tenant = read_str16(buf, &mut pos, "tenant")?;
        validate_tenant(tenant)?;
        let channel = read_str16(buf, &mut pos, "channel")?;
        if channel.len() > MAX_NAME_LEN {
            return Err(FrameError::NameTooLong {
                field: "channel",
                len: channel.len(),
            });
        }
        let payload = buf.get(pos..).unwrap_or(&[]);
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(FrameError::PayloadTooLarge { len: payload.len() });
        }
        Ok(Publish {
            version,
            mode,
            tenant,
            channel,
            payload,
        })
    }

    /// The layout the client used.
    pub fn version(&self) -> Version {
        self.version
    }
    /// The delivery mode (v1 is always [`Mode::Broadcast`]).
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// The tenant, validated by [`super::validate_tenant`].
    pub fn tenant(&self) -> &'a str {
        self.tenant
    }
    /// The channel: non-empty UTF-8 of at most [`MAX_NAME_LEN`] bytes.
    pub fn channel(&self) -> &'a str {
        self.channel
    }
    /// The payload: at most [`MAX_PAYLOAD_LEN`] bytes, possibly empty.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Length of the v2 encoding of a publish with these fields.
    pub fn encoded_len_v2(tenant: &str, channel: &str, payload: &[u8]) -> usize {
        PUBLISH_V2_HEADER_LEN + 2 + tenant.len() + 2 + channel.len() + payload.len()
    }

    /// Writes a v2 publish frame (used by clients and tests). Returns the bytes written.
    pub fn encode_v2(
        mode: Mode,
        tenant: &str,
        channel: &str,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, super::EncodeError> {
        use super::str16::{check_name, put};
        check_name("tenant", tenant, super::limits::MAX_TENANT_LEN)?;
        check_name("channel", channel, MAX_NAME_LEN)?;
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(super::EncodeError::FieldTooLong {
                field: "payload",
                len: payload.len(),
            });
        }
        let needed = Self::encoded_len_v2(tenant, channel, payload);
        if out.len() < needed {
            return Err(super::EncodeError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        let mut pos = 0;
        put(out, &mut pos, &[PUBLISH_V2_TAG, mode.to_byte()]);
        for s in [tenant, channel] {
            // Lengths were checked against 255 above: the cast cannot truncate.
            put(out, &mut pos, &(s.len() as u16).to_be_bytes());
            put(out, &mut pos, s.as_bytes());
        }
        put(out, &mut pos, payload);
        Ok(pos)
    }
}
