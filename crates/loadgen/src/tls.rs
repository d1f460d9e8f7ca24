//! TLS for the load generator's connections (`--tls --cacert --cert --key`, as redis-benchmark
//! takes them), on rustls with the `ring` provider like the server: the same library on both ends
//! of `bench/tls`, and one that costs the client less per request than redis-benchmark's OpenSSL
//! path, so that the server is what the run measures.
//!
//! The server is checked against `--cacert` and the name or address in `--addr` (the bench's
//! certificates name 127.0.0.1 and localhost); `--cert` with `--key` answer servers that ask for a
//! client certificate (`tls-auth-clients`).

use std::sync::Arc;

use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;

/// The command-line options, flattened into the subcommands that open [`crate::client::Conn`]s.
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Speak TLS to the server.
    #[arg(long)]
    pub tls: bool,
    /// CAs (PEM) the server's certificate must chain to (with --tls).
    #[arg(long, requires = "tls")]
    pub cacert: Option<String>,
    /// Client certificate (PEM), for servers that ask for one (with --key).
    #[arg(long, requires_all = ["tls", "key"])]
    pub cert: Option<String>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires_all = ["tls", "cert"])]
    pub key: Option<String>,
}

/// A client configuration, shared by every connection of a run.
#[derive(Clone, Debug)]
pub struct Tls(Arc<ClientConfig>);

impl TlsArgs {
    /// The configuration the options ask for; `None` without `--tls`.
    pub fn load(&self) -> Result<Option<Tls>, String> {
        if !self.tls {
            return Ok(None);
        }
        let cacert = self.cacert.as_deref().ok_or("--tls needs --cacert")?;
        let mut roots = RootCertStore::empty();
        for c in certs(cacert)? {
            roots
                .add(c)
                .map_err(|e| format!("CA certificate '{cacert}': {e}"))?;
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS protocols: {e}"))?
                .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("private key '{key}': {e}"))?;
                builder
                    .with_client_auth_cert(certs(cert)?, key_der)
                    .map_err(|e| format!("client certificate '{cert}' with key '{key}': {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(Tls(Arc::new(config))))
    }
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate file '{path}': {e}"))?;
    if certs.is_empty() {
        return Err(format!("certificate file '{path}': no certificate in it"));
    }
    Ok(certs)
}

impl Tls {
    /// Runs the handshake on `stream`, checking the server against `addr`'s host part.
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}"))
        })?;
        tokio_rustls::TlsConnector::from(Arc::clone(&self.0))
            .connect(name, stream)
            .await
    }
}
