//! The real `kubectl` the tests drive: where `make test` installs it, and one way to run it.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The kubectl `make test` installs (`KUBECTL`), or `.tools/`. Missing fails the test with how
/// to get it: a test that needs kubectl never passes without it.
pub fn kubectl() -> PathBuf {
    let path = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/kubectl/bin/kubectl")
        });
    assert!(
        path.exists(),
        "kubectl missing at {}: `make kubectl` installs it (`make test` does so first)",
        path.display()
    );
    path
}

/// What one kubectl run printed.
pub struct Ran {
    pub ok: bool,
    pub out: String,
    pub err: String,
}

/// Runs kubectl as `context` in namespace `team`, feeding `stdin` when given.
pub fn run(
    bin: &Path,
    kubeconfig: &Path,
    context: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Ran {
    let mut child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", context, "-n", "team", "--request-timeout=10s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("kubectl output");
    Ran {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
