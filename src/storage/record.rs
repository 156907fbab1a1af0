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

/// The record length a header declares, if the header is complete and plausible.
fn declared_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let key_len = u32_at(buf, 13) as usize;
    let value_len = u32_at(buf, 17) as usize;
    (key_len <= MAX_KEY_LEN && value_len <= FORMAT_MAX_VALUE_LEN)
        .then_some(HEADER_LEN + key_len + value_len)
}

/// [`scan`] over a file of `len` bytes that `read_at(buf, offset)` fills buffers from, a window
/// of about `window` bytes at a time, so that a merge neither holds a whole segment in memory
/// nor has the kernel zero a fresh segment-sized buffer for it. `visit` also gets the record's
/// raw bytes. The first damaged record ends the windowed walk: the rest of the file is read
/// whole and handed to [`scan`], whose resynchronisation may look arbitrarily far ahead (damage
/// is rare). Offsets in the outcome are file offsets, exactly as [`scan`] of the whole file
/// would report them.
pub fn scan_windowed(
    len: u64,
    window: usize,
    mut read_at: impl FnMut(&mut [u8], u64) -> std::io::Result<()>,
    mut visit: impl FnMut(u64, &Record<'_>, &[u8]),
) -> std::io::Result<ScanOutcome> {
    let mut window = window.max(HEADER_LEN);
    let mut buf = Vec::new();
    let mut base = 0u64;
    while base < len {
        let want = (len - base).min(window as u64) as usize;
        buf.resize(want, 0);
        read_at(&mut buf, base)?;
        let more_in_file = base + (want as u64) < len;
        let mut pos = 0;
        let damaged = loop {
            if pos == buf.len() {
                break false;
            }
            match parse(&buf[pos..]) {
                Ok(rec) => {
                    let end = pos + rec.encoded_len();
                    visit(base + pos as u64, &rec, &buf[pos..end]);
                    pos = end;
                }
                Err(ParseError::Truncated) if more_in_file => break false,
                Err(_) => break true,
            }
        };
        if damaged {
            let start = base + pos as u64;
            let mut rest = vec![0; (len - start) as usize];
            read_at(&mut rest, start)?;
            let mut outcome = scan(&rest, |offset, rec| {
                let at = offset as usize;
                visit(start + offset, rec, &rest[at..at + rec.encoded_len()]);
            });
            for (offset, _) in &mut outcome.skipped {
                *offset += start;
            }
            if let Some(at) = &mut outcome.garbage_tail_at {
                *at += start;
            }
            return Ok(outcome);
        }
        if pos == 0 {
            // One record longer than the window: widen the window to hold it (at least
            // doubling, so every round makes progress).
            window = declared_len(&buf).unwrap_or(0).max(want * 2);
        }
        base += pos as u64;
    }
    Ok(ScanOutcome::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    /// A windowed scan of a file, as the merge reads it.
    fn windowed(file: &[u8], window: usize) -> (Vec<(u64, u64, Vec<u8>)>, ScanOutcome) {
        let mut seen = Vec::new();
        let outcome = scan_windowed(
            file.len() as u64,
            window,
            |buf, at| {
                let at = at as usize;
                buf.copy_from_slice(&file[at..at + buf.len()]);
                Ok(())
            },
            |offset, rec, raw| seen.push((offset, rec.seq, raw.to_vec())),
        )
        .expect("reads from memory");
        (seen, outcome)
    }

    proptest! {
        /// Whatever the window and whatever the damage, the windowed scan sees what a scan of
        /// the whole file sees.
        #[test]
        fn a_windowed_scan_sees_what_a_whole_scan_sees(
            values in proptest::collection::vec(0usize..300, 0..12),
            flips in proptest::collection::vec((0.0f64..1.0, 1u8..=255), 0..3),
            cut in 0usize..40,
            window in 1usize..700,
        ) {
            let mut file = Vec::new();
            for (i, len) in values.iter().enumerate() {
                file.extend(encoded(i as u64, false, format!("key{i}").as_bytes(), &vec![b'v'; *len]));
            }
            for (at, xor) in flips {
                if !file.is_empty() {
                    let at = (at * file.len() as f64) as usize % file.len();
                    file[at] ^= xor;
                }
            }
            file.truncate(file.len().saturating_sub(cut));
            let mut whole = Vec::new();
            let expected = scan(&file, |offset, rec| {
                let at = offset as usize;
                whole.push((offset, rec.seq, file[at..at + rec.encoded_len()].to_vec()));
            });
            let (seen, outcome) = windowed(&file, window);
            prop_assert_eq!(seen, whole);
            prop_assert_eq!(outcome.skipped, expected.skipped);
            prop_assert_eq!(outcome.garbage_tail_at, expected.garbage_tail_at);
            prop_assert_eq!(outcome.suspect_keys, expected.suspect_keys);
        }
    }

    #[test]
    fn a_record_longer_than_the_window_is_read_whole() {
        let mut file = encoded(1, false, b"small", b"v");
        file.extend(encoded(2, false, b"large", &[7; 5000]));
        file.extend(encoded(3, false, b"after", b"v"));
        let (seen, outcome) = windowed(&file, 64);
        let seqs: Vec<u64> = seen.iter().map(|(_, seq, _)| *seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(seen[1].2.len(), HEADER_LEN + 5 + 5000);
        assert!(outcome.skipped.is_empty() && outcome.garbage_tail_at.is_none());
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
