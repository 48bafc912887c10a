//! The DoH-over-TLS listener (`listen.doh-tls`): rustls with HTTP/2 and HTTP/1.1
//! chosen by ALPN, serving only `/dns-query`.
//!
//! The certificate is reloadable without a restart: handshakes take it from a
//! [`CertStore`] (a rustls `ResolvesServerCert` behind an `ArcSwap`). A reload
//! (file change, SIGHUP, `Server::reload`) publishes a new snapshot; the accept
//! loop notices the new snapshot at the next connection and reads the `tls:` files
//! again before that handshake. A certificate that does not read keeps the old one
//! serving, with the error logged.

use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Extension;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::{AppState, doh};
use crate::config::TlsFiles;
use crate::snapshot::{Shared, Snapshot};

/// A client that has not finished its handshake by then is dropped, so that idle
/// connections cannot hold sockets open.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// ALPN, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The certificate handshakes use, replaced whole on reload.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    /// The snapshot whose `tls:` files were last read (compared by address; a
    /// `Weak` keeps the address from being reused without keeping the snapshot).
    read_for: Mutex<Weak<Snapshot>>,
}

impl CertStore {
    /// Reads the certificate and key named by `snapshot`.
    pub fn load(snapshot: &Arc<Snapshot>, files: &TlsFiles) -> Result<Self, String> {
        Ok(Self {
            current: ArcSwap::from_pointee(read_certified_key(files)?),
            read_for: Mutex::new(Arc::downgrade(snapshot)),
        })
    }

    /// Reads the files again if a reload published another snapshot since the
    /// last read. Reads happen on the blocking pool; a failure keeps the old key.
    pub async fn refresh(&self, shared: &Shared) {
        let snapshot = shared.load_full();
        {
            let mut read_for = self.read_for.lock().unwrap_or_else(|e| e.into_inner());
            if std::ptr::eq(read_for.as_ptr(), Arc::as_ptr(&snapshot)) {
                return;
            }
            *read_for = Arc::downgrade(&snapshot);
        }
        let Some(files) = snapshot.config.tls.clone() else {
            tracing::warn!(
                "the `tls:` section is gone; DoH over TLS keeps its certificate until restart"
            );
            return;
        };
        let read = tokio::task::spawn_blocking(move || read_certified_key(&files)).await;
        match read {
            Ok(Ok(key)) => {
                self.current.store(Arc::new(key));
                tracing::info!("DoH TLS certificate reloaded");
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "DoH TLS certificate not reloaded; the old one keeps serving");
            }
            Err(error) => tracing::error!(%error, "DoH TLS certificate reload failed"),
        }
    }

    /// The certificate now served.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls server config: TLS 1.2 and 1.3 with ring, ALPN h2 and http/1.1.
pub fn server_config(store: Arc<CertStore>) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Serves DoH over TLS on `listener` until `shutdown` resolves; connections still
/// open then are closed.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    store: Arc<CertStore>,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let router = doh::routes().with_state(state.clone());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors and the like: the next accept may work.
                Err(error) => {
                    tracing::warn!(%error, "DoH TLS accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        store.refresh(&state.shared).await;
        let acceptor = acceptor.clone();
        let service = router.clone().layer(Extension(ConnectInfo(peer)));
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, %peer, "DoH TLS connection ended with an error");
            }
        });
    }
    connections.shutdown().await;
    Ok(())
}

/// Reads a PEM certificate chain and private key and checks that they belong
/// together.
pub fn read_certified_key(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(&files.certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate {}: {e}", files.certificate.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "certificate {}: no CERTIFICATE in the file",
            files.certificate.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("key {}: {e}", files.key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        format!(
            "certificate {} with key {}: {e}",
            files.certificate.display(),
            files.key.display()
        )
    })?;
    Ok(certified)
}
