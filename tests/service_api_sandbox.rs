//! `make sandbox` serves the service API with the demo tenant `jupyterhub`, set up as the
//! Kubernetes manager's clients expect: scripts/run.sh is run on free ports, and a start, a
//! poll and a stop are made the way a spawner makes them, with the base URL and token it wrote
//! to `api-url` and `api-token`.

mod kubectl_bin;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Kills the script's whole process group when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port().to_string())
        .expect("port")
}

struct Api {
    base: String,
    token: String,
    roots: RootCertStore,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        name: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let addr = self.base.trim_start_matches("https://").to_string();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let stream = TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header("host", &addr)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .header("authorization", format!("Token {}", self.token))
            .header("uuidcode", name)
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(60), send.send_request(req))
            .await
            .expect("the API answers")
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }
}

fn wait_for(path: &Path, child: &mut Child) -> String {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return text.trim().to_string();
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "scripts/run.sh ended ({status}) before writing {}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} was never written", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_sandbox_serves_the_api_to_a_manager_style_tenant() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let portico = PathBuf::from(env!("CARGO_BIN_EXE_portico"));
    // The sandbox binary cargo built beside Portico's (`make build` builds the workspace).
    let sandbox = std::env::var_os("SANDBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| portico.with_file_name("portico-sandbox"));
    assert!(
        sandbox.exists(),
        "{} is missing: `cargo build -p portico-sandbox` (or `make build`) builds it",
        sandbox.display()
    );
    let state = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(root.join("scripts/run.sh"));
    command
        .arg("sandbox")
        .current_dir(&root)
        .env("KUBECTL", kubectl_bin::kubectl())
        .env("PORTICO", &portico)
        .env("SANDBOX", &sandbox)
        .env("STATE", state.path())
        .env("SANDBOX_PORT", free_port())
        .env("WEBHOOK_PORT", free_port())
        .env("OPS_PORT", free_port())
        .env("SERVICE_API_PORT", free_port())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut run = Running(command.spawn().expect("scripts/run.sh"));
    let base = tokio::task::block_in_place(|| wait_for(&state.path().join("api-url"), &mut run.0));
    let token = std::fs::read_to_string(state.path().join("api-token")).unwrap();
    assert!(token.trim().len() >= 32, "a weak token: {token:?}");
    // The token file is its owner's alone.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.path().join("api-token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "api-token is readable by others: {mode:o}");
    // The serving certificate: the repository's development one, or one made for the run.
    let ca = [state.path().join("certs/ca.crt"), root.join("certs/ca.crt")]
        .into_iter()
        .find(|p| p.exists())
        .expect("a CA certificate");
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&std::fs::read(ca).unwrap()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let api = Api {
        base,
        token: token.trim().to_string(),
        roots,
    };
    let body = json!({"user_options": {"name": "My lab", "service": "JupyterLab/JupyterLab", "system": "sandbox"},
        "env": {"JUPYTERHUB_USER_ID": 1, "JUPYTERHUB_USER": "demo", "JUPYTERHUB_API_TOKEN": "t",
                "JUPYTERHUB_STATUS_URL": "users/progress/status/demo/lab"},
        "certs": {}, "start_id": "1a2b3c4d"});
    let (status, reply) = api
        .call(
            "POST",
            "/api/services/",
            "0123456789abcdef0123456789abcdef",
            Some(&body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let path = "/api/services/0123456789abcdef0123456789abcdef/";
    let mut last = Value::Null;
    for _ in 0..300 {
        let (status, reply) = api
            .call("GET", path, "0123456789abcdef0123456789abcdef", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["running"], true, "{reply}");
        if reply["status"] == "running" {
            last = reply;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last["address"]["service"], "svc-0123456789abcdef0123456789abcdef-1a2b3c4d",
        "{last}"
    );
    assert_eq!(last["namespace"], "userlabs");
    // The manager's defaults: <user_id> is the hub's numeric id.
    assert_eq!(last["user_id"], "1");
    let (status, _) = api
        .call("DELETE", path, "0123456789abcdef0123456789abcdef", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, reply) = api
        .call("GET", path, "0123456789abcdef0123456789abcdef", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    drop(run);
}
