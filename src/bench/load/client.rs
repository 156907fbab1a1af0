//! One persistent HTTP/1.1 connection to a node, as a load-generating client holds it:
//! hyper's client connection over a TCP_NODELAY socket, re-dialled after a failure.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::api::CONTEXT_HEADER;

/// Which HTTP API the bench speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Native,
    Riak,
    /// etcd's v3 JSON gateway (`POST /v3/kv/range`, `/v3/kv/put`), to measure quorumkv beside
    /// etcd with the same generator (`scripts/bench-peers.sh`). Reads and writes only.
    Etcd,
}

impl Api {
    /// The path of a key, with `query` (empty, or starting with `?`); for etcd, the key
    /// itself, which `Client::send` puts in the gateway's JSON body.
    pub fn path(self, bucket: &str, key: &str, query: &str) -> String {
        match self {
            Api::Native => format!("/kv/{bucket}/{key}{query}"),
            Api::Riak => format!("/buckets/{bucket}/keys/{key}{query}"),
            Api::Etcd => format!("{bucket}/{key}"),
        }
    }

    /// The header that carries the causal context.
    fn context_header(self) -> &'static str {
        match self {
            Api::Native | Api::Etcd => CONTEXT_HEADER,
            Api::Riak => "x-riak-vclock",
        }
    }
}

/// An etcd gateway call for a GET (range) or PUT (put) of `key`.
fn etcd_call(method: &Method, key: &str, value: &[u8]) -> (Method, &'static str, Bytes) {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (path, body) = if method == Method::GET {
        (
            "/v3/kv/range",
            serde_json::json!({ "key": b64(key.as_bytes()) }),
        )
    } else {
        let body = serde_json::json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        ("/v3/kv/put", body)
    };
    (Method::POST, path, Bytes::from(body.to_string()))
}

/// What the bench needs from an answer: the status, and the causal context when one came.
pub struct Answer {
    pub status: StatusCode,
    pub context: Option<String>,
}

pub struct Client {
    host: String,
    /// `Bearer <token>`, when the cluster requires one.
    authorization: Option<String>,
    /// Speak TLS, trusting this configuration's roots.
    tls: Option<Arc<rustls::ClientConfig>>,
    sender: Option<SendRequest<Full<Bytes>>>,
    api: Api,
}

/// A TLS client configuration that trusts the PEM certificates in `path`.
pub fn tls_trusting(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
    {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Client {
    /// `host` is `ip:port`; the connection is made on first use.
    pub fn new(
        host: String,
        token: Option<&str>,
        tls: Option<Arc<rustls::ClientConfig>>,
        api: Api,
    ) -> Self {
        Client {
            host,
            authorization: token.map(|t| format!("Bearer {t}")),
            tls,
            sender: None,
            api,
        }
    }

    /// Dials now, so that the first measured request does not pay for the connection.
    pub async fn connect(&mut self) -> Result<(), String> {
        self.sender = Some(self.dial().await?);
        Ok(())
    }

    async fn dial(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(&self.host)
            .await
            .map_err(|e| format!("connect {}: {e}", self.host))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
        match &self.tls {
            None => self.handshake(stream).await,
            Some(config) => {
                let name = self.host.rsplit_once(':').map_or(&*self.host, |(h, _)| h);
                let name = rustls::pki_types::ServerName::try_from(name.to_owned())
                    .map_err(|e| format!("{}: {e}", self.host))?;
                let secure = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.host))?;
                self.handshake(secure).await
            }
        }
    }

    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<Full<Bytes>>, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {}: {e}", self.host))?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the server hangs up; either way
            // the next request re-dials.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one request and reads the whole answer. On a transport error the connection is
    /// dropped, so the next call dials afresh.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        context: Option<&str>,
    ) -> Result<Answer, String> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.dial().await?,
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let (method, path, body) = match self.api {
            Api::Etcd => etcd_call(&method, path, &body),
            _ => (method, path, body),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/octet-stream");
        }
        if let Some(token) = context {
            request = request.header(self.api.context_header(), token);
        }
        if let Some(auth) = &self.authorization {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let context = response
            .headers()
            .get(self.api.context_header())
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        self.sender = Some(sender);
        Ok(Answer { status, context })
    }
}
