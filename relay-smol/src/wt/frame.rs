//! LLPS framing over WebTransport (`shared/spec/llps-wt-v0.1.md`): the control stream's
//! `kind u8 | len u32 BE | payload` frames, the lines' `len u32 BE | payload` frames, and
//! the delivery options a `SUB` may carry (`:U:<stream>:<kbps>`, `:D[:<kbps>]`).

/// Largest `len` of any frame, both ways (the SDK's `WT_MAX_PAYLOAD`). It caps the whole
/// publish or deliver frame, not only the message payload.
pub const MAX_FRAME: usize = 65_536;
/// Control-stream frame kind: binary (publish from the client, deliver from the relay).
pub const KIND_BINARY: u8 = 0;
/// Control-stream frame kind: text (commands and replies).
pub const KIND_TEXT: u8 = 1;
/// Highest line number.
pub const MAX_LINE: u8 = 8;

/// Why the peer's control stream cannot be read on: the session ends with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// A kind byte other than 0 and 1.
    UnknownKind(u8),
    /// A length over [`MAX_FRAME`].
    TooLong(u32),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownKind(k) => {
                write!(
                    f,
                    "unknown frame kind {k} on the control stream (0 binary, 1 text)"
                )
            }
            Self::TooLong(n) => write!(f, "frame of {n} bytes is over the limit of {MAX_FRAME}"),
        }
    }
}

impl std::error::Error for StreamError {}

/// Splits a control stream (`kind | len | payload`) or a line (`len | payload`, reported as
/// kind binary) into frames. Holds at most one incomplete frame.
#[derive(Debug)]
pub struct ControlReader {
    buf: Vec<u8>,
    /// Bytes before the length: 1 (kind) on the control stream, 0 on a line.
    kind_len: usize,
}

impl Default for ControlReader {
    fn default() -> Self {
        ControlReader {
            buf: Vec::new(),
            kind_len: 1,
        }
    }
}

impl ControlReader {
    /// A reader of a line's `len | payload` frames.
    pub fn line() -> Self {
        ControlReader {
            buf: Vec::new(),
            kind_len: 0,
        }
    }

    fn hlen(&self) -> usize {
        self.kind_len + 4
    }

    /// Bytes the reader wants next before it can make progress: the rest of the frame it
    /// is assembling (at least 1).
    pub fn want(&self) -> usize {
        let h = self.hlen();
        match self.buf.get(self.kind_len..h) {
            Some(l) => {
                let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                (h + len.min(MAX_FRAME))
                    .saturating_sub(self.buf.len())
                    .max(1)
            }
            None => h - self.buf.len(),
        }
    }

    /// Heap bytes held for an incomplete frame (they count against the session's budget).
    pub fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends `bytes` and hands every complete frame `(kind, payload)` to `on_frame`.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        on_frame: &mut dyn FnMut(u8, &[u8]),
    ) -> Result<(), StreamError> {
        let h = self.hlen();
        // Fast path: whole frames straight from the input, no copy.
        if self.buf.is_empty() {
            while let Some((kind, len)) = header(bytes, self.kind_len)? {
                let Some(payload) = bytes.get(h..h + len) else {
                    break;
                };
                on_frame(kind, payload);
                bytes = bytes.get(h + len..).unwrap_or(&[]);
            }
            self.buf.extend_from_slice(bytes);
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        let mut pos = 0;
        while let Some((kind, len)) = header(self.buf.get(pos..).unwrap_or(&[]), self.kind_len)? {
            let Some(payload) = self.buf.get(pos + h..pos + h + len) else {
                break;
            };
            on_frame(kind, payload);
            pos += h + len;
        }
        self.buf.drain(..pos);
        if self.buf.is_empty() {
            self.buf = Vec::new(); // an idle session holds no buffer
        }
        Ok(())
    }
}

fn header(b: &[u8], kind_len: usize) -> Result<Option<(u8, usize)>, StreamError> {
    let kind = if kind_len == 1 {
        match b.first() {
            Some(&k) if k > KIND_TEXT => return Err(StreamError::UnknownKind(k)),
            Some(&k) => k,
            None => return Ok(None),
        }
    } else {
        KIND_BINARY
    };
    let Some(l) = b.get(kind_len..kind_len + 4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]);
    if len as usize > MAX_FRAME {
        return Err(StreamError::TooLong(len));
    }
    Ok(Some((kind, len as usize)))
}

/// Where a subscription's deliveries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Binary frames on the control stream (the default).
    Control,
    /// A relay-opened unidirectional stream, 1..=8; 0 = the relay picks.
    Line(u8),
    /// HTTP datagrams (too large ones go on the control stream).
    Datagram,
}

/// A `SUB` with its WebTransport delivery options split off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubOptions<'a> {
    /// The pattern without the options.
    pub pattern: &'a str,
    /// Where deliveries go.
    pub target: Target,
    /// Per-subscription egress limit in KB/s (0 = none).
    pub kbps: u32,
}

/// Why the options of a `SUB` were refused (answered `ERR:bad_options:…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionsError {
    /// `:U:<stream>` with a stream over 8.
    LineOutOfRange,
    /// A number that does not parse.
    BadNumber,
}

impl std::fmt::Display for OptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LineOutOfRange => write!(f, "line must be 0 (relay picks) or 1..={MAX_LINE}"),
            Self::BadNumber => write!(f, "options must be :U:<stream>:<kbps> or :D[:<kbps>]"),
        }
    }
}

fn number(s: &str) -> Result<u32, OptionsError> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OptionsError::BadNumber);
    }
    s.parse().map_err(|_| OptionsError::BadNumber)
}

/// Splits `:U:<stream>:<kbps>`, `:D` or `:D:<kbps>` off the end of a `SUB` pattern (a
/// pattern may itself contain `:`, so the options are a suffix). The shorter forms are tried
/// first: `:D`, then `:D:<kbps>`, then `:U:<stream>:<kbps>`, so every accepted suffix reads
/// back the same from its canonical form (`x:U:D:0` is datagrams for `x:U`). A suffix that
/// has the shape of options but bad numbers is refused, not taken as part of the pattern.
pub fn split_options(pattern: &str) -> Result<SubOptions<'_>, OptionsError> {
    let head = |suffix: usize| pattern.get(..pattern.len() - suffix).unwrap_or("");
    if let Some(p) = pattern.strip_suffix(":D") {
        return Ok(SubOptions {
            pattern: p,
            target: Target::Datagram,
            kbps: 0,
        });
    }
    let mut parts = pattern.rsplitn(4, ':');
    let (last, second, third) = (parts.next(), parts.next(), parts.next());
    match (last, second, third) {
        (Some(kbps), Some("D"), Some(_)) => Ok(SubOptions {
            pattern: head(kbps.len() + 3),
            target: Target::Datagram,
            kbps: number(kbps)?,
        }),
        (Some(kbps), Some(line), Some("U")) if parts.next().is_some() => {
            let n = number(line)?;
            if n > u32::from(MAX_LINE) {
                return Err(OptionsError::LineOutOfRange);
            }
            Ok(SubOptions {
                pattern: head(kbps.len() + line.len() + 4),
                target: Target::Line(n as u8),
                kbps: number(kbps)?,
            })
        }
        _ => Ok(SubOptions {
            pattern,
            target: Target::Control,
            kbps: 0,
        }),
    }
}

/// Appends a control-stream frame.
pub fn push_control(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(r: &mut ControlReader, bytes: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, StreamError> {
        let mut out = Vec::new();
        r.push(bytes, &mut |k, p| out.push((k, p.to_vec())))?;
        Ok(out)
    }

    #[test]
    fn control_frames_split_anywhere() {
        let mut wire = Vec::new();
        push_control(KIND_TEXT, b"SUB:t:a.#", &mut wire);
        push_control(KIND_BINARY, &[7; 300], &mut wire);
        push_control(KIND_TEXT, b"", &mut wire);
        for cut in 0..wire.len() {
            let mut r = ControlReader::default();
            let mut got = frames(&mut r, &wire[..cut]).unwrap();
            got.extend(frames(&mut r, &wire[cut..]).unwrap());
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!(got[0], (1, b"SUB:t:a.#".to_vec()));
            assert_eq!(got[1].1.len(), 300);
            assert_eq!(r.want(), 5);
        }
    }

    #[test]
    fn bad_kind_and_oversize_are_errors() {
        let mut r = ControlReader::default();
        assert_eq!(frames(&mut r, &[2]), Err(StreamError::UnknownKind(2)));
        let mut r = ControlReader::default();
        let mut w = vec![0];
        w.extend_from_slice(&65_537u32.to_be_bytes());
        assert_eq!(frames(&mut r, &w), Err(StreamError::TooLong(65_537)));
        let mut r = ControlReader::default();
        let mut w = vec![0];
        w.extend_from_slice(&65_536u32.to_be_bytes());
        assert_eq!(frames(&mut r, &w).unwrap().len(), 0);
        assert_eq!(r.want(), 65_536);
    }

    #[test]
    fn line_frames() {
        let mut wire = Vec::new();
        for p in [&b"U:3"[..], &[9; 70][..]] {
            wire.extend_from_slice(&(p.len() as u32).to_be_bytes());
            wire.extend_from_slice(p);
        }
        for cut in 0..wire.len() {
            let mut r = ControlReader::line();
            let mut got = frames(&mut r, &wire[..cut]).unwrap();
            got.extend(frames(&mut r, &wire[cut..]).unwrap());
            assert_eq!(
                got,
                vec![(0, b"U:3".to_vec()), (0, vec![9; 70])],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn sub_options() {
        let o = split_options("a.#").unwrap();
        assert_eq!((o.pattern, o.target, o.kbps), ("a.#", Target::Control, 0));
        let o = split_options("a.b:U:3:100").unwrap();
        assert_eq!((o.pattern, o.target, o.kbps), ("a.b", Target::Line(3), 100));
        let o = split_options("a.*:U:0:0").unwrap();
        assert_eq!((o.pattern, o.target), ("a.*", Target::Line(0)));
        assert_eq!(split_options("a:U:9:0"), Err(OptionsError::LineOutOfRange));
        assert_eq!(
            split_options("a:U:255:0"),
            Err(OptionsError::LineOutOfRange)
        );
        assert_eq!(split_options("a:U:x:0"), Err(OptionsError::BadNumber));
        let o = split_options("x.y:D").unwrap();
        assert_eq!((o.pattern, o.target, o.kbps), ("x.y", Target::Datagram, 0));
        let o = split_options("x.y:D:64").unwrap();
        assert_eq!((o.pattern, o.target, o.kbps), ("x.y", Target::Datagram, 64));
        // Patterns may contain ':'; the shorter suffix wins, the same way both ways round
        // (found by tests/fuzz_wt.rs: `:U:D` read back as a bad line number).
        let o = split_options(":U:D").unwrap();
        assert_eq!((o.pattern, o.target), (":U", Target::Datagram));
        let o = split_options(":U:D:0").unwrap();
        assert_eq!((o.pattern, o.target), (":U", Target::Datagram));
        assert_eq!(split_options("x:D:y"), Err(OptionsError::BadNumber));
        let o = split_options("tenant:x.y").unwrap();
        assert_eq!((o.pattern, o.target), ("tenant:x.y", Target::Control));
        // `U:<line>:<kbps>` needs a pattern before it.
        let o = split_options("U:1:2").unwrap();
        assert_eq!((o.pattern, o.target), ("U:1:2", Target::Control));
    }
}
