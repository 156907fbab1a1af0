//! Hint files: a compact index of one merged segment, so open need not read the values.
//!
//! Layout: entries, then a footer. An entry is
//! `seq u64 | offset u32 | len u32 | flags u8 | value hash u64 | key_len u32 | key`, all
//! little-endian (the hash is the keydir's, 0 for a tombstone); the footer is
//! `magic "QKVHINT2" | entry count u64 | crc32 u32` where the crc covers every byte before it.
//! A hint of the first layout (`QKVHINT1`, no hash) is not read: its segment is scanned, once.
//! A hint that is torn, corrupt or inconsistent with its data file is ignored as a whole and the
//! data file is scanned instead: hints are an optimisation, never the source of truth.

use super::record::{HEADER_LEN, MAX_KEY_LEN};

const MAGIC: &[u8; 8] = b"QKVHINT2";
pub const FOOTER_LEN: usize = 8 + 8 + 4;
const ENTRY_FIXED_LEN: usize = 8 + 4 + 4 + 1 + 8 + 4;
const FLAG_TOMBSTONE: u8 = 1;

/// One record's location as a hint file lists it; the key borrows the file's bytes, so that
/// loading millions of entries allocates nothing per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintEntry<'a> {
    pub seq: u64,
    pub offset: u32,
    pub len: u32,
    pub tombstone: bool,
    pub hash: u64,
    pub key: &'a [u8],
}

/// How many entries a hint file says it holds (its footer alone; `None` if it has none).
pub fn count(bytes: &[u8]) -> Option<u64> {
    let footer = bytes.get(bytes.len().checked_sub(FOOTER_LEN)?..)?;
    (&footer[..8] == MAGIC)
        .then(|| u64::from_le_bytes(footer[8..16].try_into().unwrap_or_default()))
}

/// Builds a hint file's bytes in memory, entry by entry.
#[derive(Default)]
pub struct HintWriter {
    buf: Vec<u8>,
    count: u64,
}

impl HintWriter {
    pub fn push(&mut self, seq: u64, offset: u32, len: u32, hash: Option<u64>, key: &[u8]) {
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(&offset.to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf
            .push(if hash.is_none() { FLAG_TOMBSTONE } else { 0 });
        self.buf.extend_from_slice(&hash.unwrap_or(0).to_le_bytes());
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.count += 1;
    }

    /// The complete file contents, footer included.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(MAGIC);
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// Parses a hint file; `None` if it is damaged in any way or points outside a data file of
/// `data_len` bytes.
pub fn parse(bytes: &[u8], data_len: u64) -> Option<Vec<HintEntry<'_>>> {
    let body_len = bytes.len().checked_sub(FOOTER_LEN)?;
    let (body, footer) = bytes.split_at(body_len);
    let crc = u32::from_le_bytes(footer[16..20].try_into().ok()?);
    if &footer[..8] != MAGIC || crc32fast::hash(&bytes[..body_len + 16]) != crc {
        return None;
    }
    let count = u64::from_le_bytes(footer[8..16].try_into().ok()?);
    // Bounded by the file's own size, whatever the footer claims.
    let mut entries = Vec::with_capacity((count as usize).min(body.len() / ENTRY_FIXED_LEN));
    let mut pos = 0;
    while pos < body.len() {
        let fixed = body.get(pos..pos + ENTRY_FIXED_LEN)?;
        let seq = u64::from_le_bytes(fixed[0..8].try_into().ok()?);
        let offset = u32::from_le_bytes(fixed[8..12].try_into().ok()?);
        let len = u32::from_le_bytes(fixed[12..16].try_into().ok()?);
        let flags = fixed[16];
        let hash = u64::from_le_bytes(fixed[17..25].try_into().ok()?);
        let key_len = u32::from_le_bytes(fixed[25..29].try_into().ok()?) as usize;
        if flags & !FLAG_TOMBSTONE != 0
            || key_len == 0
            || key_len > MAX_KEY_LEN
            || (len as usize) < HEADER_LEN + key_len
            || u64::from(offset) + u64::from(len) > data_len
        {
            return None;
        }
        pos += ENTRY_FIXED_LEN;
        let key = body.get(pos..pos + key_len)?;
        pos += key_len;
        entries.push(HintEntry {
            seq,
            offset,
            len,
            tombstone: flags & FLAG_TOMBSTONE != 0,
            hash,
            key,
        });
    }
    (entries.len() as u64 == count).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = HintWriter::default();
        w.push(5, 0, 30, Some(77), b"alpha");
        w.push(9, 30, 26, None, b"beta");
        w.finish()
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let entries = parse(&bytes, 56).expect("valid hint");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].key, b"beta");
        assert_eq!(count(&sample()), Some(2));
        assert!(entries[1].tombstone);
        assert_eq!(entries[0].seq, 5);
        assert_eq!(entries[0].hash, 77);
    }

    #[test]
    fn any_damage_rejects_the_whole_hint() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut], 56).is_none(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(parse(&damaged, 56).is_none(), "flip at {i}");
        }
    }

    #[test]
    fn entries_past_the_data_file_reject_the_hint() {
        assert!(parse(&sample(), 55).is_none());
    }
}
