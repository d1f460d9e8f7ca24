//! TLS for the client port and the internal links (replication, cluster bus), on rustls with the
//! `ring` provider.
//!
//! The certificates are loaded from the `tls-*` parameters into one [`Loaded`] set: the server
//! side (what the TLS port and the bus present, and how they check client certificates:
//! `tls-auth-clients`) and the client side (what replication and the bus present when they
//! connect out, and the CAs they trust). The set is built whole and swapped whole, so `CONFIG SET
//! tls-cert-file` (through `Hooks::apply_tls`) either takes effect for every new connection or,
//! when a file does not load, changes nothing; connections already open keep the certificates
//! they started with, as in Redis. The set is process-wide: a process runs one node.
//!
//! Outgoing links check the peer's chain against `tls-ca-cert-file` but not the name in its
//! certificate, as Redis does (nodes are reached by IP address, and certificates name hosts).
//!
//! A client connection is generic over [`ClientStream`], which the plain TCP stream and the TLS
//! stream both implement, so the plain-text path compiles to what it was. The one difference that
//! matters: a TLS stream may hold decrypted bytes the socket no longer signals, so its
//! [`ClientStream::readable`] looks at what rustls holds before waiting on the socket (an idle
//! connection waits for readability without a buffer: `crate::bufpool`).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use shoal_commands::config::{Config, TlsAuthClients};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The server and client configurations in force.
#[derive(Clone)]
pub struct Loaded {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

static LOADED: RwLock<Option<Loaded>> = RwLock::new(None);

/// Whether `config` asks for TLS anywhere (as Redis: only then are the files loaded).
pub fn wanted(config: &Config) -> bool {
    config.tls_port != 0 || config.tls_replication || config.tls_cluster
}

/// Whether a node's links to other nodes' data ports (a cluster's replication aside: that is
/// `tls-replication`) speak TLS: under `tls-cluster` with a TLS port, the port every node then
/// announces (as Redis, whose MIGRATE also follows `tls-cluster`). Without a TLS port the nodes
/// announce their plain ports and only the bus is on TLS.
pub fn cluster_links(config: &Config) -> bool {
    config.tls_cluster && config.tls_port != 0
}

/// Loads the certificates `config` names and makes them the ones new connections use; nothing
/// changes if one does not load (the reason names the file). Does nothing when no TLS is wanted.
pub fn install(config: &Config) -> Result<(), String> {
    if !wanted(config) {
        return Ok(());
    }
    let loaded = load(config)?;
    *LOADED.write().expect("tls lock") = Some(loaded);
    Ok(())
}

/// `Hooks::apply_tls`: [`install`], logging why it failed.
pub fn apply(config: &Config) -> Result<(), String> {
    install(config).inspect_err(
        |e| tracing::warn!(error = %e, "Failed applying new TLS configuration; the old one stays"),
    )
}

/// The configurations in force (`None` before any TLS was configured).
pub fn loaded() -> Option<Loaded> {
    LOADED.read().expect("tls lock").clone()
}

/// ring's suites, AES-128-GCM first (then AES-256-GCM, then ChaCha20), which the server side
/// chooses over the client's order: AES-128-GCM costs both ends less per record than the
/// AES-256-GCM most clients list first (OpenSSL does), at a strength TLS 1.3 makes mandatory;
/// `bench/tls` measures it.
fn provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite as S;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    Arc::new(p)
}

/// `tls-protocols` as rustls versions: Redis's names, case-insensitive; empty means both.
fn protocols(text: &str) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let mut versions = Vec::new();
    for word in text.split_whitespace() {
        if word.eq_ignore_ascii_case("TLSv1.2") {
            versions.push(&rustls::version::TLS12);
        } else if word.eq_ignore_ascii_case("TLSv1.3") {
            versions.push(&rustls::version::TLS13);
        } else if word.eq_ignore_ascii_case("TLSv1") || word.eq_ignore_ascii_case("TLSv1.1") {
            tracing::warn!("tls-protocols: {word} is not supported (too old); ignored");
        } else {
            return Err(format!(
                "Invalid tls-protocols specified. Use a combination of 'TLSv1', 'TLSv1.1', \
                 'TLSv1.2' and 'TLSv1.3'. (got '{word}')"
            ));
        }
    }
    if text.split_whitespace().next().is_none() {
        versions = vec![&rustls::version::TLS12, &rustls::version::TLS13];
    }
    if versions.is_empty() {
        return Err("tls-protocols: no supported protocol version (TLSv1.2, TLSv1.3)".into());
    }
    Ok(versions)
}

fn certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("Failed to load {what} '{path}': {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "Failed to load {what} '{path}': no certificate in it"
        ));
    }
    Ok(certs)
}

fn key(path: &str, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("Failed to load {what} '{path}': {e}"))
}

/// The CAs of `tls-ca-cert-file` and `tls-ca-cert-dir`.
fn roots(config: &Config) -> Result<RootCertStore, String> {
    if config.tls_ca_cert_file.is_empty() && config.tls_ca_cert_dir.is_empty() {
        return Err("Either tls-ca-cert-file or tls-ca-cert-dir must be specified".into());
    }
    let mut store = RootCertStore::empty();
    let add = |path: &str, store: &mut RootCertStore| -> Result<(), String> {
        for c in certs(path, "CA certificate(s) file")? {
            store
                .add(c)
                .map_err(|e| format!("Failed to load CA certificate(s) file '{path}': {e}"))?;
        }
        Ok(())
    };
    if !config.tls_ca_cert_file.is_empty() {
        add(&config.tls_ca_cert_file, &mut store)?;
    }
    if !config.tls_ca_cert_dir.is_empty() {
        let dir = &config.tls_ca_cert_dir;
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("Failed to configure CA certificate(s) dir '{dir}': {e}"))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if matches!(ext, "pem" | "crt") {
                add(&path.display().to_string(), &mut store)?;
            }
        }
    }
    Ok(store)
}

/// Builds both configurations from `config`; the reason names the file that did not load.
pub fn load(config: &Config) -> Result<Loaded, String> {
    if config.tls_cert_file.is_empty() {
        return Err("tls-cert-file must be set to use TLS".into());
    }
    if config.tls_key_file.is_empty() {
        return Err("tls-key-file must be set to use TLS".into());
    }
    let versions = protocols(&config.tls_protocols)?;
    let roots = Arc::new(roots(config)?);
    let provider = provider();
    let chain = certs(&config.tls_cert_file, "certificate")?;
    let private = key(&config.tls_key_file, "private key")?;
    let verifier = match config.tls_auth_clients {
        TlsAuthClients::No => WebPkiClientVerifier::no_client_auth(),
        TlsAuthClients::Yes => {
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?
        }
        TlsAuthClients::Optional => {
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client certificate verifier: {e}"))?
        }
    };
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls-protocols: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "Failed to load certificate '{}' with private key '{}': {e}",
                config.tls_cert_file, config.tls_key_file
            )
        })?;
    // The suite is chosen in our order (`provider`), not the client's.
    server.ignore_client_order = true;
    let (cert_file, key_file) = if config.tls_client_cert_file.is_empty() {
        (&config.tls_cert_file, &config.tls_key_file)
    } else {
        (&config.tls_client_cert_file, &config.tls_client_key_file)
    };
    let client_chain = certs(cert_file, "client certificate")?;
    let client_key = key(key_file, "client private key")?;
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("server certificate verifier: {e}"))?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls-protocols: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
        .with_client_auth_cert(client_chain, client_key)
        .map_err(|e| {
            format!("Failed to load client certificate '{cert_file}' with key '{key_file}': {e}")
        })?;
    Ok(Loaded {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// Checks a server's chain against the trusted CAs, not the name it is reached by (Redis does not
/// check it either: nodes are reached by address).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts a TLS connection on `stream`, within `timeout` (`tls-handshake-timeout-ms`).
pub async fn accept(
    server: Arc<ServerConfig>,
    stream: TcpStream,
    timeout: Duration,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// Opens a TLS connection to `host` on `stream` with the client configuration in force, within
/// `timeout`.
pub async fn connect(
    stream: TcpStream,
    host: &str,
    timeout: Duration,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let Some(loaded) = loaded() else {
        return Err(io::Error::other(
            "TLS is not configured (tls-cert-file, tls-key-file, tls-ca-cert-file)",
        ));
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(loaded.client);
    match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// The client configuration of a command-line tool (`shoal cluster ... --tls`, `shoal verify
/// --tls`): set once by [`install_tool`]; never in a server process.
static TOOL: RwLock<Option<Arc<ClientConfig>>> = RwLock::new(None);

/// Makes every connection the tools open (`crate::tool_client::Client::connect`) speak TLS,
/// trusting the CAs in `cacert` (PEM) and, for servers that ask for one (`tls-auth-clients`),
/// presenting `cert` with `key`, as `redis-cli --tls --cacert --cert --key` does. Servers are
/// checked against the CAs, not by name (nodes are reached by address, as Redis's tools do).
pub fn install_tool(
    cacert: &str,
    cert: Option<&str>,
    key_file: Option<&str>,
) -> Result<(), String> {
    let mut store = RootCertStore::empty();
    for c in certs(cacert, "CA certificate")? {
        store
            .add(c)
            .map_err(|e| format!("CA certificate '{cacert}': {e}"))?;
    }
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .map_err(|e| format!("server certificate verifier: {e}"))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocols: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)));
    let config = match (cert, key_file) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(
                certs(c, "client certificate")?,
                key(k, "client private key")?,
            )
            .map_err(|e| format!("Failed to load client certificate '{c}' with key '{k}': {e}"))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("--cert and --key go together".into()),
    };
    *TOOL.write().expect("tls lock") = Some(Arc::new(config));
    Ok(())
}

/// Whether [`install_tool`] ran: the tools' connections then speak TLS.
pub fn tool_tls() -> bool {
    TOOL.read().expect("tls lock").is_some()
}

/// A blocking client connection to `host` with the client configuration in force (a node's,
/// else a tool's), for `crate::tool_client`; the caller drives the handshake on its socket.
pub fn blocking_client(host: &str) -> io::Result<rustls::ClientConnection> {
    let Some(config) = loaded()
        .map(|l| l.client)
        .or_else(|| TOOL.read().expect("tls lock").clone())
    else {
        return Err(io::Error::other(
            "TLS is not configured (tls-cert-file, tls-key-file, tls-ca-cert-file)",
        ));
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    rustls::ClientConnection::new(config, name).map_err(io::Error::other)
}

/// What a client connection needs of its stream besides reading and writing.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath (addresses, options, fd).
    fn tcp(&self) -> &TcpStream;
    /// Resolves when a read would make progress: bytes already decrypted, or the socket readable.
    fn readable(&mut self) -> impl std::future::Future<Output = io::Result<()>> + Send;
    /// Writes what can be written now without waiting (`WouldBlock` if nothing).
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Whether bytes accepted by a write still wait in the stream (TLS records not sent yet).
    fn unflushed(&self) -> bool;
}

impl ClientStream for TcpStream {
    #[inline]
    fn tcp(&self) -> &TcpStream {
        self
    }

    #[inline]
    async fn readable(&mut self) -> io::Result<()> {
        TcpStream::readable(self).await
    }

    #[inline]
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }

    #[inline]
    fn unflushed(&self) -> bool {
        false
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    async fn readable(&mut self) -> io::Result<()> {
        // Records already received are decrypted first: a read returns them without the socket
        // ever signalling again, so waiting on it could stall a pipeline forever.
        let (tcp, conn) = self.get_mut();
        match conn.process_new_packets() {
            Ok(state) if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() => {
                return Ok(());
            }
            // The read reports the error.
            Err(_) => return Ok(()),
            Ok(_) => {}
        }
        tcp.readable().await
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(self).poll_write(&mut cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn unflushed(&self) -> bool {
        self.get_ref().1.wants_write()
    }
}

/// An outgoing internal link: plain TCP, or TLS (`tls-replication`, `tls-cluster`).
pub enum LinkStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl LinkStream {
    /// Connects to `host:port` within `timeout`, with TLS if `tls`.
    pub async fn connect(host: &str, port: u16, tls: bool, timeout: Duration) -> io::Result<Self> {
        let s = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = s.set_nodelay(true);
        if tls {
            Ok(LinkStream::Tls(Box::new(connect(s, host, timeout).await?)))
        } else {
            Ok(LinkStream::Plain(s))
        }
    }
}

impl AsyncRead for LinkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            LinkStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            LinkStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_flush(cx),
            LinkStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            LinkStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A stream accepted by a listener that may serve TLS (the cluster bus).
pub enum AcceptedStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for AcceptedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AcceptedStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            AcceptedStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AcceptedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AcceptedStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            AcceptedStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AcceptedStream::Plain(s) => Pin::new(s).poll_flush(cx),
            AcceptedStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AcceptedStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            AcceptedStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_redis_names() {
        assert_eq!(protocols("").unwrap().len(), 2);
        assert_eq!(protocols("tlsv1.3").unwrap().len(), 1);
        assert_eq!(protocols("TLSv1.2 TLSv1.3").unwrap().len(), 2);
        assert!(protocols("TLSv9").is_err());
        assert!(protocols("TLSv1.1").is_err());
    }

    #[test]
    fn aes_128_gcm_comes_first_in_each_version() {
        use rustls::CipherSuite as S;
        let suites: Vec<S> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let at = |s: S| suites.iter().position(|x| *x == s).unwrap();
        assert!(at(S::TLS13_AES_128_GCM_SHA256) < at(S::TLS13_AES_256_GCM_SHA384));
        assert!(
            at(S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
                < at(S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)
        );
        assert_eq!(
            suites.len(),
            rustls::crypto::ring::DEFAULT_CIPHER_SUITES.len()
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let config = Config {
            tls_port: 1,
            tls_cert_file: "/nonexistent/cert.pem".into(),
            tls_key_file: "/nonexistent/key.pem".into(),
            tls_ca_cert_file: "/nonexistent/ca.pem".into(),
            ..Config::default()
        };
        let Err(e) = load(&config) else {
            panic!("loaded from nowhere")
        };
        assert!(e.contains("/nonexistent/"), "{e}");
    }
}
