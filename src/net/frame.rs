//! The wire format between nodes: length-delimited frames, each `kind u8 | request id u64 |
//! body`, over a persistent connection on which many requests are in flight at once.
//!
//! A connection opens with a hello in each direction: `node id | cluster settings hash |
//! protocol version`. Anything that is not a well-formed frame closes the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::LengthDelimitedCodec;

/// Largest frame accepted: bounds what a peer (or garbage) can make us buffer.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// 3: siblings carry the Riak surface's metadata, and nodes list keys for a coverage plan.
pub const PROTOCOL_VERSION: u16 = 4;

pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hello = 1,
    Request = 2,
    Response = 3,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub id: u64,
    pub body: Bytes,
}

impl Frame {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(9 + self.body.len());
        out.put_u8(self.kind as u8);
        out.put_u64_le(self.id);
        out.extend_from_slice(&self.body);
        out.freeze()
    }

    pub fn decode(mut raw: BytesMut) -> Option<Frame> {
        if raw.len() < 9 {
            return None;
        }
        let kind = match raw.get_u8() {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Response,
            _ => return None,
        };
        let id = raw.get_u64_le();
        Some(Frame {
            kind,
            id,
            body: raw.freeze(),
        })
    }
}

/// What each side says first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub node_id: String,
    pub cluster_hash: u64,
    pub protocol: u16,
}

impl Hello {
    pub fn frame(&self) -> Frame {
        let mut body = BytesMut::new();
        body.put_u64_le(self.cluster_hash);
        body.put_u16_le(self.protocol);
        body.extend_from_slice(self.node_id.as_bytes());
        Frame {
            kind: Kind::Hello,
            id: 0,
            body: body.freeze(),
        }
    }

    pub fn from_frame(frame: &Frame) -> Option<Hello> {
        if frame.kind != Kind::Hello || frame.body.len() < 10 || frame.body.len() > 10 + 64 {
            return None;
        }
        let mut body = frame.body.clone();
        let cluster_hash = body.get_u64_le();
        let protocol = body.get_u16_le();
        let node_id = String::from_utf8(body.to_vec()).ok()?;
        Some(Hello {
            node_id,
            cluster_hash,
            protocol,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_hellos_round_trip_and_garbage_is_refused() {
        let f = Frame {
            kind: Kind::Request,
            id: 42,
            body: Bytes::from_static(b"payload"),
        };
        assert_eq!(Frame::decode(BytesMut::from(&f.encode()[..])), Some(f));
        let hello = Hello {
            node_id: "n1".into(),
            cluster_hash: 7,
            protocol: PROTOCOL_VERSION,
        };
        let raw = BytesMut::from(&hello.frame().encode()[..]);
        let frame = Frame::decode(raw).expect("frame");
        assert_eq!(Hello::from_frame(&frame), Some(hello));
        assert_eq!(Frame::decode(BytesMut::from(&b"\x09garbage!"[..])), None);
        assert_eq!(Frame::decode(BytesMut::from(&b"\x01"[..])), None);
    }
}
