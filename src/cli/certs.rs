//! `portico certs`: make a CA and a serving certificate for the webhook Service, and print the
//! caBundle. The certificate work is in [`crate::server::certs`]; this is flags and output.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::server::certs::{mint, CertSpec};

/// Make a CA and a serving certificate for the webhook, and print the caBundle.
///
/// Writes three files into `--out`: `ca.crt` (the CA certificate), `tls.crt` (the serving
/// certificate, signed by that CA) and `tls.key` (its private key, mode 0600) — the names a
/// Kubernetes TLS Secret uses, so they can become one with
/// `kubectl create secret tls portico-tls --cert=DIR/tls.crt --key=DIR/tls.key`. Existing files
/// are replaced.
///
/// The serving certificate names the Service the way the apiserver calls it: `SERVICE`,
/// `SERVICE.NAMESPACE`, `SERVICE.NAMESPACE.svc` and `SERVICE.NAMESPACE.svc.cluster.local`,
/// plus every `--host` (IP addresses become IP SANs). `localhost` and `127.0.0.1` are included
/// only when given, e.g. for running the webhook on your machine.
///
/// Standard output gets exactly one line: the CA certificate in base64, the value of
/// `clientConfig.caBundle` in the webhook configurations. Everything else goes to stderr. The
/// CA's private key is not kept: running the command again makes a new CA, whose caBundle must
/// then be injected again.
#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// Name of the webhook's Service.
    #[arg(long, value_name = "NAME", default_value = "portico")]
    pub service: String,

    /// Namespace of the webhook's Service.
    #[arg(long, value_name = "NAMESPACE", default_value = "portico-system")]
    pub namespace: String,

    /// An extra DNS name or IP address for the serving certificate; repeat for more.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,

    /// Directory to write `ca.crt`, `tls.crt` and `tls.key` into (created if missing).
    #[arg(long, value_name = "DIR", default_value = "certs")]
    pub out: PathBuf,

    /// Days the certificates stay valid.
    #[arg(long, value_name = "N", default_value_t = 365)]
    pub days: u32,
}

/// `portico certs`: synchronous; writes the files, prints the caBundle on stdout.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let bundle = mint(&CertSpec {
        service: args.service,
        namespace: args.namespace,
        hosts: args.hosts,
        days: args.days,
    })?;
    let files = bundle.write_to(&args.out)?;
    eprintln!(
        "portico: wrote {}, {} and {} (key mode 0600), valid {} days, for: {}",
        files.ca.display(),
        files.cert.display(),
        files.key.display(),
        args.days,
        bundle.names.join(", ")
    );
    eprintln!("portico: the caBundle for the webhook configurations follows on stdout");
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", bundle.ca_bundle())
        .and_then(|()| stdout.flush())
        .context("cannot write the caBundle to stdout")?;
    Ok(())
}
