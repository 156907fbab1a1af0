//! One log record: its byte layout, encoding, and a parser that never trusts the bytes it is given.
//!
//! The layout is documented field by field in the `storage` module doc. Everything here works on
//! byte slices already in memory, so a length field can never make us allocate: a record whose
//! declared length runs past the end of the slice is simply not a record.

/// Size of the fixed header that precedes key and value.
pub const HEADER_LEN: usize = 21;
/// Largest key the format admits (64 KiB).
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// Largest value the format admits, whatever the configured limit; bounds every length field.
pub const FORMAT_MAX_VALUE_LEN: usize = 256 * 1024 * 1024;

const FLAG_TOMBSTONE: u8 = 0b0000_0001;
const KNOWN_FLAGS: u8 = FLAG_TOMBSTONE;

/// A record parsed out of a buffer; borrows key and value from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub tombstone: bool,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl Record<'_> {
    /// Total encoded length: header, key and value.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.key.len() + self.value.len()
    }
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The buffer ends before the record does (a torn append, or a cut file).
    Truncated,
    /// The header is impossible or the checksum does not match.
    Corrupt,
}

/// Encodes a record into `out` (cleared first). The sequence number is part of the checksummed
/// bytes, so the caller encodes once it knows it.
pub fn encode_into(out: &mut Vec<u8>, seq: u64, tombstone: bool, key: &[u8], value: &[u8]) {
    out.clear();
    out.reserve(HEADER_LEN + key.len() + value.len());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(if tombstone { FLAG_TOMBSTONE } else { 0 });
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
}

/// Parses the record that starts at the beginning of `buf`, verifying its checksum.
pub fn parse(buf: &[u8]) -> Result<Record<'_>, ParseError> {
    if buf.len() < HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    let crc = u32_at(buf, 0);
    let seq = header_seq(buf);
    let flags = buf[12];
    let key_len = u32_at(buf, 13) as usize;
    let value_len = u32_at(buf, 17) as usize;
    let tombstone = flags & FLAG_TOMBSTONE != 0;
    if flags & !KNOWN_FLAGS != 0
        || key_len == 0
        || key_len > MAX_KEY_LEN
        || value_len > FORMAT_MAX_VALUE_LEN
        || (tombstone && value_len != 0)
    {
        return Err(ParseError::Corrupt);
    }
    let total = HEADER_LEN + key_len + value_len;
    if buf.len() < total {
        return Err(ParseError::Truncated);
    }
    if crc32fast::hash(&buf[4..total]) != crc {
        return Err(ParseError::Corrupt);
    }
    let key = &buf[HEADER_LEN..HEADER_LEN + key_len];
    Ok(Record {
        seq,
        tombstone,
        key,
        value: &buf[HEADER_LEN + key_len..total],
    })
}

/// The sequence number field of a header (which must be at least [`HEADER_LEN`] bytes).
pub fn header_seq(header: &[u8]) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&header[4..12]);
    u64::from_le_bytes(b)
}

/// The key a damaged record claims to have, when its header is at least plausible and its key
/// bytes are present. Used only to tell the replica layer which keys may need repair.
pub fn suspect_key(buf: &[u8]) -> Option<&[u8]> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let key_len = u32_at(buf, 13) as usize;
    if key_len == 0 || key_len > MAX_KEY_LEN || buf.len() < HEADER_LEN + key_len {
        return None;
    }
    Some(&buf[HEADER_LEN..HEADER_LEN + key_len])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// What a scan of a whole segment found.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Damaged regions followed by valid records: (offset, bytes skipped).
    pub skipped: Vec<(u64, u64)>,
    /// Where trailing bytes that hold no valid record begin, if any (a torn tail).
    pub garbage_tail_at: Option<u64>,
    /// Keys named by damaged records, best effort.
    pub suspect_keys: Vec<Vec<u8>>,
}

/// Walks every valid record of a segment image in order, calling `visit(offset, record)`.
/// Damage in the middle is skipped by searching forward for the next offset where a record
/// with a valid checksum starts; damage that reaches the end is reported as a garbage tail.
pub fn scan(buf: &[u8], mut visit: impl FnMut(u64, &Record<'_>)) -> ScanOutcome {
    let mut outcome = ScanOutcome::default();
    let mut pos = 0usize;
    while pos < buf.len() {
        match parse(&buf[pos..]) {
            Ok(rec) => {
                visit(pos as u64, &rec);
                pos += rec.encoded_len();
            }
            Err(_) => {
                if let Some(key) = suspect_key(&buf[pos..]) {
                    outcome.suspect_keys.push(key.to_vec());
                }
                match (pos + 1..buf.len()).find(|&at| parse(&buf[at..]).is_ok()) {
                    Some(next) => {
                        outcome.skipped.push((pos as u64, (next - pos) as u64));
                        pos = next;
                    }
                    None => {
                        outcome.garbage_tail_at = Some(pos as u64);
                        break;
                    }
                }
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(seq: u64, tombstone: bool, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(&mut out, seq, tombstone, key, value);
        out
    }

    #[test]
    fn round_trip() {
        let buf = encoded(7, false, b"k", b"value");
        let rec = parse(&buf).expect("valid record");
        assert_eq!(
            rec,
            Record {
                seq: 7,
                tombstone: false,
                key: b"k",
                value: b"value"
            }
        );
        assert_eq!(rec.encoded_len(), buf.len());
    }

    #[test]
    fn every_truncation_is_detected() {
        let buf = encoded(1, false, b"key", b"some value");
        for cut in 0..buf.len() {
            assert_eq!(
                parse(&buf[..cut]),
                Err(ParseError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let buf = encoded(1, false, b"key", b"some value");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                assert!(parse(&damaged).is_err(), "flip at {byte}:{bit}");
            }
        }
    }

    #[test]
    fn absurd_lengths_are_corrupt_not_allocations() {
        let mut buf = encoded(1, false, b"key", b"v");
        buf[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&buf), Err(ParseError::Corrupt));
    }

    #[test]
    fn scan_skips_middle_damage_and_reports_tail() {
        let mut file = Vec::new();
        for i in 0..5u64 {
            file.extend(encoded(i, false, format!("k{i}").as_bytes(), b"0123456789"));
        }
        let rec_len = file.len() / 5;
        file[rec_len + 25] ^= 0xff; // damage record 1's value
        file.extend_from_slice(&[0xAB; 7]); // torn tail
        let mut seen = Vec::new();
        let outcome = scan(&file, |_, r| seen.push(r.seq));
        assert_eq!(seen, vec![0, 2, 3, 4]);
        assert_eq!(outcome.skipped, vec![(rec_len as u64, rec_len as u64)]);
        assert_eq!(outcome.garbage_tail_at, Some(5 * rec_len as u64));
        assert_eq!(outcome.suspect_keys, vec![b"k1".to_vec()]);
    }
}
