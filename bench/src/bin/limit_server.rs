//! `portico-limit-server`: the ceiling for Portico's webhook stack on this machine.
//!
//! A bare hyper 1 + tokio-rustls HTTPS server with the same transport as `portico serve` (ring
//! provider, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, `TCP_NODELAY`, a multi-threaded tokio
//! runtime with one worker per core) that reads each request body to the end and answers a
//! constant AdmissionReview without parsing anything. Whatever Portico costs beyond this is the
//! price of its decisions, logging and metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Serve a constant AdmissionReview over HTTPS, as fast as the stack allows.
#[derive(Parser, Debug)]
#[command(name = "portico-limit-server")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8444")]
    listen: SocketAddr,
    /// Serving certificate (PEM chain, leaf first).
    #[arg(long, default_value = "certs/tls.crt")]
    tls_cert: PathBuf,
    /// Private key of the serving certificate (PEM).
    #[arg(long, default_value = "certs/tls.key")]
    tls_key: PathBuf,
    /// The reply body (JSON) to send to every request; a small allowed review when absent.
    #[arg(long)]
    answer: Option<PathBuf>,
}

const DEFAULT_ANSWER: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true}}"#;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let answer = match &args.answer {
        Some(path) => {
            Bytes::from(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => Bytes::from_static(DEFAULT_ANSWER.as_bytes()),
    };
    let config = tls_config(&args)?;
    // The same runtime shape as `portico serve`: multi-threaded, one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(
        args.listen,
        TlsAcceptor::from(Arc::new(config)),
        answer,
    ))
}

fn tls_config(args: &Args) -> anyhow::Result<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(&args.tls_cert)
        .with_context(|| format!("reading {}", args.tls_cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", args.tls_cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&args.tls_key)
        .with_context(|| format!("reading {}", args.tls_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("certificate and key do not make a serving pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

async fn serve(listen: SocketAddr, acceptor: TlsAcceptor, answer: Bytes) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!(
        "portico-limit-server listening on https://{}",
        listener.local_addr()?
    );
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let answer = answer.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            match alpn.as_deref() {
                Some(b"h2") => builder = builder.http2_only(),
                Some(b"http/1.1") => builder = builder.http1_only(),
                _ => {}
            }
            builder.http1().timer(TokioTimer::new()).keep_alive(true);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(256);
            let service = service_fn(move |req| reply(req, answer.clone()));
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

async fn reply(req: Request<Incoming>, answer: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the whole body, as a webhook must before it can answer; never look at it.
    let _ = req.into_body().collect().await;
    let mut response = Response::new(Full::new(answer));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
