//! Client authentication: bearer tokens or HTTP basic credentials, read from files or
//! environment variables at start, compared as SHA-256 digests in constant time.
//!
//! Only the `Authorization` header is looked at: the API decides who is calling before it reads
//! anything else of a request.

use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::config::ApiClient;

/// A configured client with its secrets loaded.
#[derive(Clone)]
pub struct Client {
    pub config: ApiClient,
    token: Option<[u8; 32]>,
    basic: Option<(String, [u8; 32])>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the digests.
        f.debug_struct("Client")
            .field("name", &self.config.name)
            .finish()
    }
}

/// Why a client's secret cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("api client {client:?}: cannot read {what} file {path}: {error}")]
    File {
        client: String,
        what: &'static str,
        path: String,
        error: std::io::Error,
    },
    #[error("api client {client:?}: environment variable {var} ({what}) is not set")]
    Env {
        client: String,
        what: &'static str,
        var: String,
    },
    #[error("api client {client:?}: the {what} is empty")]
    Empty { client: String, what: &'static str },
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

fn read_secret(
    client: &str,
    what: &'static str,
    file: Option<&str>,
    env: Option<&str>,
) -> Result<Option<[u8; 32]>, CredentialError> {
    let text = match (file, env) {
        (Some(path), _) => {
            std::fs::read_to_string(Path::new(path)).map_err(|error| CredentialError::File {
                client: client.into(),
                what,
                path: path.into(),
                error,
            })?
        }
        (None, Some(var)) => std::env::var(var).map_err(|_| CredentialError::Env {
            client: client.into(),
            what,
            var: var.into(),
        })?,
        (None, None) => return Ok(None),
    };
    // Files written by editors or `echo` end with a newline that is not part of the secret.
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(CredentialError::Empty {
            client: client.into(),
            what,
        });
    }
    Ok(Some(digest(secret.as_bytes())))
}

/// Loads every client's secrets.
pub fn load(clients: &[ApiClient]) -> Result<Vec<Client>, CredentialError> {
    clients
        .iter()
        .map(|c| {
            let token = read_secret(
                &c.name,
                "token",
                c.token_file.as_deref(),
                c.token_env.as_deref(),
            )?;
            let password = read_secret(
                &c.name,
                "password",
                c.password_file.as_deref(),
                c.password_env.as_deref(),
            )?;
            let basic = c.username.clone().zip(password);
            Ok(Client {
                config: c.clone(),
                token,
                basic,
            })
        })
        .collect()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    // Constant time: every byte is looked at whatever the first difference.
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client an `Authorization` header value authenticates, if any.
pub fn authenticate<'c>(clients: &'c [Client], authorization: Option<&[u8]>) -> Option<&'c Client> {
    let header = std::str::from_utf8(authorization?).ok()?;
    let (scheme, credentials) = header.split_once(' ')?;
    let credentials = credentials.trim();
    let mut found = None;
    if scheme.eq_ignore_ascii_case("bearer") {
        let presented = digest(credentials.as_bytes());
        for c in clients {
            if c.token.as_ref().is_some_and(|t| same(t, &presented)) && found.is_none() {
                found = Some(c);
            }
        }
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let presented = digest(password.as_bytes());
        for c in clients {
            if let Some((u, p)) = &c.basic {
                if u == user && same(p, &presented) && found.is_none() {
                    found = Some(c);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_basic_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("t");
        std::fs::write(&token, "s3cret\n").unwrap();
        std::env::set_var("PORTICO_TEST_AUTH_PW", "pw");
        let clients = load(&[
            ApiClient {
                name: "a".into(),
                token_file: Some(token.display().to_string()),
                ..Default::default()
            },
            ApiClient {
                name: "b".into(),
                username: Some("hub".into()),
                password_env: Some("PORTICO_TEST_AUTH_PW".into()),
                ..Default::default()
            },
        ])
        .unwrap();
        let who =
            |h: &str| authenticate(&clients, Some(h.as_bytes())).map(|c| c.config.name.clone());
        assert_eq!(who("Bearer s3cret").as_deref(), Some("a"));
        assert_eq!(who("bearer s3cret").as_deref(), Some("a"));
        assert_eq!(who("Bearer s3cret\n"), Some("a".into()));
        assert_eq!(who("Bearer s3cre"), None);
        assert_eq!(who("Bearer "), None);
        let basic = base64::engine::general_purpose::STANDARD.encode("hub:pw");
        assert_eq!(who(&format!("Basic {basic}")).as_deref(), Some("b"));
        let wrong = base64::engine::general_purpose::STANDARD.encode("hub:pX");
        assert_eq!(who(&format!("Basic {wrong}")), None);
        assert_eq!(who("Basic !!!"), None);
        assert_eq!(who("Digest x"), None);
        assert!(authenticate(&clients, None).is_none());
        assert!(authenticate(&clients, Some(&[0xff, 0xfe])).is_none());
    }

    #[test]
    fn missing_secrets_are_named() {
        let err = load(&[ApiClient {
            name: "a".into(),
            token_env: Some("PORTICO_TEST_AUTH_UNSET".into()),
            ..Default::default()
        }])
        .unwrap_err();
        assert!(err.to_string().contains("PORTICO_TEST_AUTH_UNSET"), "{err}");
        let err = load(&[ApiClient {
            name: "a".into(),
            token_file: Some("/nonexistent/token".into()),
            ..Default::default()
        }])
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/token"), "{err}");
    }
}
