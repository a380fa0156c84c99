//! `str16` fields (`u16 length | UTF-8 bytes`, length ≥ 1, LLPS v0.1 section 3) and the
//! small byte helpers every frame encoder and decoder shares. A leaf module: the frame
//! files depend on it, it depends on none of them.

use super::error::{EncodeError, FrameError};

/// Reads one str16 at `buf[*pos..]`, advancing `pos`.
pub(super) fn read_str16<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    field: &'static str,
) -> Result<&'a str, FrameError> {
    let rest = buf.get(*pos..).ok_or(FrameError::Truncated { field })?;
    let (len_bytes, rest) = rest
        .split_first_chunk::<2>()
        .ok_or(FrameError::Truncated { field })?;
    let len = usize::from(u16::from_be_bytes(*len_bytes));
    if len == 0 {
        return Err(FrameError::EmptyField { field });
    }
    let bytes = rest.get(..len).ok_or(FrameError::Truncated { field })?;
    let s = core::str::from_utf8(bytes).map_err(|_| FrameError::NotUtf8 { field })?;
    *pos += 2 + len;
    Ok(s)
}

/// Checks a name field before encoding: non-empty and at most `max` bytes.
pub(super) fn check_name(field: &'static str, s: &str, max: usize) -> Result<(), EncodeError> {
    if s.is_empty() {
        return Err(EncodeError::EmptyField { field });
    }
    if s.len() > max {
        return Err(EncodeError::FieldTooLong {
            field,
            len: s.len(),
        });
    }
    Ok(())
}

/// Copies `src` to `out[*pos..]`; callers have checked the length beforehand.
pub(super) fn put(out: &mut [u8], pos: &mut usize, src: &[u8]) {
    if let Some(dst) = out.get_mut(*pos..*pos + src.len()) {
        dst.copy_from_slice(src);
    }
    *pos += src.len();
}
