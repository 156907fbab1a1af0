//! Encrypted, authenticated node links: the Noise protocol (`snow`) with the cluster secret as
//! a pre-shared key, `Noise_NNpsk0_25519_AESGCM_BLAKE2s` (AES-GCM, not ChaCha20-Poly1305:
//! with AES-NI the headline benchmark lost 3% to encryption instead of 13%).
//!
//! The pre-shared key is mixed in before the first message, so a peer without the secret
//! cannot produce or read a single handshake message: it is refused before anything it sends
//! is parsed as a frame. After the two handshake messages every byte is a Noise transport
//! record, `len u16 (big-endian) | ciphertext`, at most 65,535 bytes; [`NoiseStream`] turns
//! records into a byte stream again, so the framing above it is unchanged.
//!
//! What this proves is membership (knowing the secret), not which member: any holder of the
//! secret can claim any member's id. The hello that follows names the node, and the server
//! checks that name against the member list.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

const PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_BLAKE2s";
/// Binds the handshake to this protocol, so a key shared with something else is no use here.
const PROLOGUE: &[u8] = b"quorumkv node link 1";
/// Largest handshake message: an ephemeral key, a tag, no payload. Anything longer before
/// authentication is refused unread.
const MAX_HANDSHAKE: usize = 128;
const MAX_RECORD: usize = 65_535;
const TAG: usize = 16;
/// Plaintext bytes per record.
const MAX_PLAIN: usize = MAX_RECORD - TAG;

/// The 32-byte pre-shared key of a cluster's node links.
pub type LinkKey = [u8; 32];

fn noise_error(e: snow::Error) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())
}

fn builder(key: &LinkKey) -> io::Result<snow::Builder<'_>> {
    let params = PATTERN
        .parse()
        .map_err(|e: snow::Error| io::Error::other(e.to_string()))?;
    snow::Builder::new(params)
        .prologue(PROLOGUE)
        .and_then(|b| b.psk(0, key))
        .map_err(noise_error)
}

async fn send_handshake<S: AsyncWrite + Unpin>(s: &mut S, message: &[u8]) -> io::Result<()> {
    // Handshake messages are far below u16::MAX.
    s.write_all(&(message.len() as u16).to_be_bytes()).await?;
    s.write_all(message).await?;
    s.flush().await
}

async fn receive_handshake<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Vec<u8>> {
    let mut len = [0; 2];
    s.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_HANDSHAKE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a quorumkv node link handshake",
        ));
    }
    let mut message = vec![0; len];
    s.read_exact(&mut message).await?;
    Ok(message)
}

/// The dialing side's handshake. The caller bounds it in time.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    key: &LinkKey,
) -> io::Result<NoiseStream<S>> {
    let mut hs = builder(key)?.build_initiator().map_err(noise_error)?;
    let mut buf = [0; MAX_HANDSHAKE];
    let n = hs.write_message(&[], &mut buf).map_err(noise_error)?;
    send_handshake(&mut stream, &buf[..n]).await?;
    let answer = receive_handshake(&mut stream).await?;
    hs.read_message(&answer, &mut buf).map_err(|_| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the peer failed the handshake: its cluster secret differs from ours",
        )
    })?;
    let state = hs.into_transport_mode().map_err(noise_error)?;
    Ok(NoiseStream::new(stream, state))
}

/// The accepting side's handshake. The caller bounds it in time.
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    key: &LinkKey,
) -> io::Result<NoiseStream<S>> {
    let mut hs = builder(key)?.build_responder().map_err(noise_error)?;
    let mut buf = [0; MAX_HANDSHAKE];
    let first = receive_handshake(&mut stream).await?;
    hs.read_message(&first, &mut buf).map_err(|_| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the peer failed the handshake: it does not hold this cluster's secret",
        )
    })?;
    let n = hs.write_message(&[], &mut buf).map_err(noise_error)?;
    send_handshake(&mut stream, &buf[..n]).await?;
    let state = hs.into_transport_mode().map_err(noise_error)?;
    Ok(NoiseStream::new(stream, state))
}

/// A byte stream over Noise transport records.
pub struct NoiseStream<S> {
    inner: S,
    state: snow::TransportState,
    /// Bytes read from `inner` that do not yet form a whole record.
    incoming: Vec<u8>,
    /// Decrypted bytes not yet handed to the reader, from `plain_at` on.
    plain: Vec<u8>,
    plain_at: usize,
    /// Encrypted records not yet written to `inner`, from `out_at` on.
    outgoing: Vec<u8>,
    out_at: usize,
}

impl<S> NoiseStream<S> {
    fn new(inner: S, state: snow::TransportState) -> Self {
        NoiseStream {
            inner,
            state,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_at: 0,
            outgoing: Vec::new(),
            out_at: 0,
        }
    }

    /// Decrypts one whole record from `incoming`, if there is one.
    fn open_record(&mut self) -> io::Result<bool> {
        let Some(len) = self
            .incoming
            .get(..2)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        else {
            return Ok(false);
        };
        if self.incoming.len() < 2 + len {
            return Ok(false);
        }
        self.plain.resize(len, 0);
        let n = self
            .state
            .read_message(&self.incoming[2..2 + len], &mut self.plain)
            .map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "a record failed authentication")
            })?;
        self.plain.truncate(n);
        self.plain_at = 0;
        self.incoming.drain(..2 + len);
        Ok(true)
    }
}

impl<S: AsyncWrite + Unpin> NoiseStream<S> {
    /// Writes out pending records; ready once none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.outgoing.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.outgoing[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        self.outgoing.clear();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoiseStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_at);
                buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.open_record()? {
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(if this.incoming.is_empty() {
                    Ok(())
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                });
            }
            this.incoming.extend_from_slice(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoiseStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One record in flight at most: writing waits for the socket, not for memory.
        ready!(this.poll_drain(cx))?;
        let take = buf.len().min(MAX_PLAIN);
        let at = this.outgoing.len();
        this.outgoing.resize(at + 2 + take + TAG, 0);
        let n = this
            .state
            .write_message(&buf[..take], &mut this.outgoing[at + 2..])
            .map_err(noise_error)?;
        this.outgoing.truncate(at + 2 + n);
        this.outgoing[at..at + 2].copy_from_slice(&(n as u16).to_be_bytes());
        // Start sending now; what the socket does not take yet goes on the next call or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_sides_with_the_secret_talk_through_records() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let key = [7; 32];
        let (client, server) = tokio::join!(initiate(a, &key), respond(b, &key));
        let (mut client, mut server) = (client.expect("initiator"), server.expect("responder"));
        // Larger than one record, so it is split and put back together.
        let message: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let sent = message.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.expect("write");
            client.flush().await.expect("flush");
            client
        });
        let mut got = vec![0; message.len()];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(got, message);
        drop(writer.await);
    }

    #[tokio::test]
    async fn a_peer_without_the_secret_is_refused_by_both_sides() {
        let (a, b) = tokio::io::duplex(4096);
        let (client, server) = tokio::join!(initiate(a, &[1; 32]), respond(b, &[2; 32]));
        let server = server.err().expect("responder refuses");
        assert_eq!(server.kind(), io::ErrorKind::PermissionDenied);
        assert!(client.is_err(), "initiator cannot complete either");
    }

    #[tokio::test]
    async fn an_oversized_first_message_is_refused_unread() {
        let (mut a, b) = tokio::io::duplex(4096);
        a.write_all(&u16::MAX.to_be_bytes()).await.expect("write");
        let refused = respond(b, &[1; 32]).await.err().expect("refused");
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_tampered_record_breaks_the_stream() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let key = [3; 32];
        let (mut tap_a, mut tap_b) = tokio::io::duplex(1 << 16);
        // A relay that flips one byte of the first transport record.
        let relay = tokio::spawn(async move {
            let mut b = b;
            let (mut up, mut buf) = (vec![0; 1 << 16], vec![0; 1 << 16]);
            let mut seen = 0usize;
            loop {
                tokio::select! {
                    n = b.read(&mut up) => {
                        let n = n.unwrap_or(0);
                        if n == 0 { break; }
                        tap_b.write_all(&up[..n]).await.ok();
                    }
                    n = tap_b.read(&mut buf) => {
                        let n = n.unwrap_or(0);
                        if n == 0 { break; }
                        // 2 + 48 bytes of handshake come first; byte 54 is in the record.
                        if (seen..seen + n).contains(&54) { buf[54 - seen] ^= 1; }
                        seen += n;
                        b.write_all(&buf[..n]).await.ok();
                    }
                }
            }
        });
        let (client, server) = tokio::join!(initiate(a, &key), respond(&mut tap_a, &key));
        let (mut client, mut server) = (client.expect("initiator"), server.expect("responder"));
        server.write_all(b"hello").await.expect("write");
        server.flush().await.expect("flush");
        let mut got = [0; 5];
        let read = client.read_exact(&mut got).await;
        assert_eq!(
            read.err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidData)
        );
        relay.abort();
    }
}
