//! Compact, versioned binary encodings of a key's state, for storage and for the wire.
//!
//! Integers are LEB128 varints; strings and byte strings are a varint length then the bytes.
//! - DVVSet: `'D' | version 1 | entry count | entries`, an entry being `actor | counter |
//!   value count | siblings`, actors strictly increasing, value count at most counter.
//! - LWW register: `'L' | version 1 | physical ms | logical | node | sibling`.
//! - Sibling: `flags (bit 0 tombstone, bit 1 write id present, bit 2 metadata present) |
//!   [write id] | modified ms | content type | data | [pair count | (name | value) pairs]`.
//!
//! Decoding checks every length against the bytes actually present before using it, so no
//! input can make it panic or allocate more than the input's own size.

use super::dvvset::{Actor, DvvSet, Entry};
use super::error::DecodeError;
use super::lww::{LwwRegister, Timestamp};
use super::state::KeyState;
use super::value::Sibling;

const TAG_DVVSET: u8 = b'D';
const TAG_LWW: u8 = b'L';
const VERSION: u8 = 1;
const FLAG_TOMBSTONE: u8 = 1;
/// A varint write id follows the flags (v2; absent in v1 data, which reads as id 0).
const FLAG_WRITE_ID: u8 = 2;
/// Metadata pairs follow the data (v3, written by the Riak surface; absent: none).
const FLAG_META: u8 = 4;
/// Longest actor id and content type accepted.
pub const MAX_NAME_LEN: usize = 255;

impl KeyState {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            KeyState::Siblings(set) => {
                out.extend_from_slice(&[TAG_DVVSET, VERSION]);
                put_varint(&mut out, set.entries.len() as u64);
                for e in &set.entries {
                    put_bytes(&mut out, e.actor.as_str().as_bytes());
                    put_varint(&mut out, e.counter);
                    put_varint(&mut out, e.values.len() as u64);
                    for v in &e.values {
                        put_sibling(&mut out, v);
                    }
                }
            }
            KeyState::Lww(reg) => {
                out.extend_from_slice(&[TAG_LWW, VERSION]);
                put_varint(&mut out, reg.timestamp.physical_ms);
                put_varint(&mut out, u64::from(reg.timestamp.logical));
                put_bytes(&mut out, reg.node.as_str().as_bytes());
                put_sibling(&mut out, &reg.value);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<KeyState, DecodeError> {
        let mut r = Reader { buf: bytes };
        let tag = r.u8()?;
        let version = r.u8()?;
        if tag != TAG_DVVSET && tag != TAG_LWW {
            return Err(DecodeError::UnknownTag(tag));
        }
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let state = if tag == TAG_DVVSET {
            let count = r.varint()?;
            let mut entries: Vec<Entry<Sibling>> = Vec::new();
            for _ in 0..count {
                let actor = r.actor()?;
                if entries.last().is_some_and(|prev| prev.actor >= actor) {
                    return Err(DecodeError::Malformed("actors out of order"));
                }
                let counter = r.varint()?;
                let n = r.varint()?;
                if n > counter {
                    return Err(DecodeError::Malformed("more values than events"));
                }
                let mut values = Vec::new();
                for _ in 0..n {
                    values.push(r.sibling()?);
                }
                entries.push(Entry {
                    actor,
                    counter,
                    values,
                });
            }
            KeyState::Siblings(DvvSet { entries })
        } else {
            let physical_ms = r.varint()?;
            let logical = u32::try_from(r.varint()?)
                .map_err(|_| DecodeError::Malformed("logical clock out of range"))?;
            KeyState::Lww(LwwRegister {
                timestamp: Timestamp {
                    physical_ms,
                    logical,
                },
                node: r.actor()?,
                value: r.sibling()?,
            })
        };
        if !r.buf.is_empty() {
            return Err(DecodeError::Malformed("trailing bytes"));
        }
        Ok(state)
    }
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_sibling(out: &mut Vec<u8>, s: &Sibling) {
    let mut flags = if s.tombstone { FLAG_TOMBSTONE } else { 0 };
    if s.write_id != 0 {
        flags |= FLAG_WRITE_ID;
    }
    if !s.meta.is_empty() {
        flags |= FLAG_META;
    }
    out.push(flags);
    if s.write_id != 0 {
        put_varint(out, s.write_id);
    }
    put_varint(out, s.modified_ms);
    put_bytes(out, s.content_type.as_bytes());
    put_bytes(out, &s.data);
    if !s.meta.is_empty() {
        put_varint(out, s.meta.len() as u64);
        for (name, value) in &s.meta {
            put_bytes(out, name.as_bytes());
            put_bytes(out, value.as_bytes());
        }
    }
}

/// A cursor over untrusted bytes; every read is bounds-checked.
pub(super) struct Reader<'a> {
    pub buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::Malformed("varint overflows 64 bits"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed("varint longer than 10 bytes"))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        if len > self.buf.len() as u64 {
            return Err(DecodeError::Truncated);
        }
        let (bytes, rest) = self.buf.split_at(len as usize);
        self.buf = rest;
        Ok(bytes)
    }

    fn name(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes()?;
        if bytes.len() > MAX_NAME_LEN {
            return Err(DecodeError::Malformed("name too long"));
        }
        std::str::from_utf8(bytes).map_err(|_| DecodeError::Malformed("name is not UTF-8"))
    }

    pub fn actor(&mut self) -> Result<Actor, DecodeError> {
        let name = self.name()?;
        if name.is_empty() {
            return Err(DecodeError::Malformed("empty actor"));
        }
        Ok(Actor::new(name))
    }

    fn sibling(&mut self) -> Result<Sibling, DecodeError> {
        let flags = self.u8()?;
        if flags & !(FLAG_TOMBSTONE | FLAG_WRITE_ID | FLAG_META) != 0 {
            return Err(DecodeError::Malformed("unknown sibling flags"));
        }
        let write_id = if flags & FLAG_WRITE_ID != 0 {
            self.varint()?
        } else {
            0
        };
        let modified_ms = self.varint()?;
        let content_type = self.name()?.to_owned();
        let data = self.bytes()?.to_vec();
        let mut meta = Vec::new();
        if flags & FLAG_META != 0 {
            // Each pair takes at least two bytes, so the count cannot outrun the input.
            let count = self.varint()?;
            if count > self.buf.len() as u64 / 2 {
                return Err(DecodeError::Truncated);
            }
            for _ in 0..count {
                let name = self.name()?.to_owned();
                let value = std::str::from_utf8(self.bytes()?)
                    .map_err(|_| DecodeError::Malformed("metadata value is not UTF-8"))?
                    .to_owned();
                meta.push((name, value));
            }
        }
        Ok(Sibling {
            data,
            content_type,
            modified_ms,
            tombstone: flags & FLAG_TOMBSTONE != 0,
            write_id,
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::VersionVector;

    #[test]
    fn metadata_round_trips_and_its_absence_reads_as_none() {
        let a = Actor::new("a");
        let with = Sibling::value(b"v".to_vec(), "text/plain", 5).with_meta(vec![
            ("x-riak-meta-color".into(), "blue".into()),
            ("link".into(), "</buckets/b/keys/k>; riaktag=\"t\"".into()),
        ]);
        let state = KeyState::Siblings(DvvSet::new().update(&VersionVector::new(), with, &a));
        let bytes = state.encode();
        assert_eq!(KeyState::decode(&bytes), Ok(state));
        // A count of pairs larger than the bytes left is refused, not allocated.
        let mut forged = bytes.clone();
        let at = forged.len()
            - 1
            - "</buckets/b/keys/k>; riaktag=\"t\"".len()
            - 1
            - "link".len()
            - 1
            - "blue".len()
            - 1
            - "x-riak-meta-color".len()
            - 1;
        forged[at] = 0x7f;
        assert!(KeyState::decode(&forged).is_err());
    }
}
