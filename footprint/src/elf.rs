//! Just enough of ELF64 (little-endian) to list section sizes and `DT_NEEDED` libraries, for
//! any architecture: the aarch64 binary is read on the x86_64 host without binutils.

use std::fmt;

/// One section header: name, size in bytes, and whether it is loaded into memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Section name, e.g. `.text`.
    pub name: String,
    /// Size in bytes (`sh_size`).
    pub size: u64,
    /// `SHF_ALLOC`: occupies memory at run time.
    pub alloc: bool,
    /// `SHT_NOBITS` (like `.bss`): takes no space in the file.
    pub nobits: bool,
}

/// What was read from an ELF file.
#[derive(Debug, Clone)]
pub struct Elf {
    /// `e_machine` as a readable name (`x86_64`, `aarch64`, or the number).
    pub machine: String,
    /// All sections, in file order.
    pub sections: Vec<Section>,
    /// Shared libraries from `DT_NEEDED`, in order.
    pub needed: Vec<String>,
}

/// The file is not an ELF64 little-endian file, or is truncated or inconsistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfError(pub String);

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a readable ELF64 file: {}", self.0)
    }
}

const SHT_DYNAMIC: u32 = 6;
const SHT_NOBITS: u32 = 8;
const SHF_ALLOC: u64 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

fn bytes<'a>(data: &'a [u8], off: u64, len: u64, what: &str) -> Result<&'a [u8], ElfError> {
    let start = usize::try_from(off).map_err(|_| ElfError(format!("{what}: offset too large")))?;
    let len = usize::try_from(len).map_err(|_| ElfError(format!("{what}: length too large")))?;
    start
        .checked_add(len)
        .and_then(|end| data.get(start..end))
        .ok_or_else(|| {
            ElfError(format!(
                "{what} at {off:#x} (+{len}) is past the end of the file"
            ))
        })
}

fn u16_at(d: &[u8], off: u64, what: &str) -> Result<u16, ElfError> {
    let b = bytes(d, off, 2, what)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(d: &[u8], off: u64, what: &str) -> Result<u32, ElfError> {
    let b = bytes(d, off, 4, what)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    Ok(u32::from_le_bytes(a))
}

fn u64_at(d: &[u8], off: u64, what: &str) -> Result<u64, ElfError> {
    let b = bytes(d, off, 8, what)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

fn cstr_at(d: &[u8], off: u64, what: &str) -> Result<String, ElfError> {
    let start = usize::try_from(off).map_err(|_| ElfError(format!("{what}: offset too large")))?;
    let tail = d
        .get(start..)
        .ok_or_else(|| ElfError(format!("{what} at {off:#x} is past the end of the file")))?;
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| ElfError(format!("{what} at {off:#x} is not NUL-terminated")))?;
    Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
}

struct RawSection {
    name_off: u32,
    kind: u32,
    flags: u64,
    offset: u64,
    size: u64,
    link: u32,
}

/// Parses section headers and the dynamic section of an ELF64 little-endian file.
pub fn parse(data: &[u8]) -> Result<Elf, ElfError> {
    if data.get(0..4) != Some(b"\x7fELF".as_slice()) {
        return Err(ElfError("no ELF magic".into()));
    }
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(ElfError("only ELF64 little-endian is supported".into()));
    }
    let machine = match u16_at(data, 18, "e_machine")? {
        62 => "x86_64".to_string(),
        183 => "aarch64".to_string(),
        40 => "arm".to_string(),
        n => format!("machine {n}"),
    };
    let shoff = u64_at(data, 0x28, "e_shoff")?;
    let shentsize = u64::from(u16_at(data, 0x3a, "e_shentsize")?);
    let shnum = u64::from(u16_at(data, 0x3c, "e_shnum")?);
    let shstrndx = u64::from(u16_at(data, 0x3e, "e_shstrndx")?);
    if shentsize < 64 {
        return Err(ElfError(format!("section header size {shentsize} < 64")));
    }
    let mut raw = Vec::new();
    for i in 0..shnum {
        let h = shoff + i * shentsize;
        raw.push(RawSection {
            name_off: u32_at(data, h, "sh_name")?,
            kind: u32_at(data, h + 4, "sh_type")?,
            flags: u64_at(data, h + 8, "sh_flags")?,
            offset: u64_at(data, h + 0x18, "sh_offset")?,
            size: u64_at(data, h + 0x20, "sh_size")?,
            link: u32_at(data, h + 0x28, "sh_link")?,
        });
    }
    let names = raw
        .get(usize::try_from(shstrndx).unwrap_or(usize::MAX))
        .ok_or_else(|| ElfError(format!("section name table index {shstrndx} out of range")))?
        .offset;
    let mut sections = Vec::new();
    for s in &raw {
        sections.push(Section {
            name: cstr_at(data, names + u64::from(s.name_off), "section name")?,
            size: s.size,
            alloc: s.flags & SHF_ALLOC != 0,
            nobits: s.kind == SHT_NOBITS,
        });
    }
    let mut needed = Vec::new();
    if let Some(dynamic) = raw.iter().find(|s| s.kind == SHT_DYNAMIC) {
        let strtab = raw
            .get(usize::try_from(dynamic.link).unwrap_or(usize::MAX))
            .ok_or_else(|| ElfError("the dynamic section links to no string table".into()))?
            .offset;
        let mut off = dynamic.offset;
        while off + 16 <= dynamic.offset + dynamic.size {
            let tag = u64_at(data, off, "d_tag")?;
            let val = u64_at(data, off + 8, "d_val")?;
            if tag == DT_NULL {
                break;
            }
            if tag == DT_NEEDED {
                needed.push(cstr_at(data, strtab + val, "DT_NEEDED name")?);
            }
            off += 16;
        }
    }
    Ok(Elf {
        machine,
        sections,
        needed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_test_binary() {
        let exe = std::env::current_exe().expect("test binary path");
        let data = std::fs::read(exe).expect("read test binary");
        let elf = parse(&data).expect("our own binary is ELF64 LE");
        assert_eq!(elf.machine, std::env::consts::ARCH);
        let text = elf
            .sections
            .iter()
            .find(|s| s.name == ".text")
            .expect(".text");
        assert!(text.alloc && !text.nobits && text.size > 0);
        assert!(
            elf.needed.iter().any(|n| n.starts_with("libc.so")),
            "{:?}",
            elf.needed
        );
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        assert!(parse(b"").is_err());
        assert!(parse(b"MZ\x90\x00").is_err());
        let exe = std::env::current_exe().expect("test binary path");
        let data = std::fs::read(exe).expect("read test binary");
        // The section headers live at the end of the file: cut them off.
        let err = parse(&data[..data.len() / 2]).expect_err("truncated");
        assert!(err.0.contains("past the end"), "{err}");
    }
}
