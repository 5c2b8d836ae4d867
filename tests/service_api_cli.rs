//! `portico serve --api` and `portico config check` on the `api` section, as a user runs them.

use std::process::Command;

fn portico() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portico"))
}

#[test]
fn serve_api_without_clients_says_so() {
    let out = portico()
        .args([
            "serve",
            "--api",
            "--no-controller",
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .env_remove("PORTICO_CONFIG")
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.clients"), "{err}");
}

#[test]
fn config_check_explains_api_problems() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "api:\n  indicators: {open: 'x', close: '>'}\n  clients:\n    - name: portal\n      namespace: team\n",
    )
    .unwrap();
    let out = portico()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "api.indicators.open",
        "api.clients[0]: no credentials",
        "identity.trustedSubmitters",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    std::fs::write(
        &file,
        "identity:\n  trustedSubmitters:\n    users: [portico-api]\napi:\n  impersonate: portico-api\n  clients:\n    - name: portal\n      tokenEnv: PORTAL_TOKEN\n      namespace: 'jupyter-{user}'\n",
    )
    .unwrap();
    let out = portico()
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
