//! Client authentication: tokens (`Bearer <token>`, or `Token <token>` as the Kubernetes
//! manager's clients send it) or HTTP basic credentials, read from files or
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
    #[error("api clients {first:?} and {second:?} have the same {what}; a request could not tell them apart (give each client its own secret)")]
    Shared {
        first: String,
        second: String,
        what: &'static str,
    },
}

/// The one rule by which a secret is trimmed, applied to what is read from a file or an
/// environment variable and to what a request presents alike: surrounding ASCII whitespace
/// (the newline editors and `echo` add, the spaces a header may carry) is not part of it.
pub fn trim_secret(secret: &str) -> &str {
    secret.trim_matches(|c: char| c.is_ascii_whitespace())
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
    let secret = trim_secret(&text);
    if secret.is_empty() {
        return Err(CredentialError::Empty {
            client: client.into(),
            what,
        });
    }
    Ok(Some(digest(secret.as_bytes())))
}

/// Loads every client's secrets. Two clients with the same token, or the same user name and
/// password, are refused: a request would authenticate as whichever came first.
pub fn load(clients: &[ApiClient]) -> Result<Vec<Client>, CredentialError> {
    let loaded = load_each(clients)?;
    for (i, a) in loaded.iter().enumerate() {
        for b in &loaded[i + 1..] {
            let shared = |what| CredentialError::Shared {
                first: a.config.name.clone(),
                second: b.config.name.clone(),
                what,
            };
            if a.token.is_some() && a.token == b.token {
                return Err(shared("token"));
            }
            if let (Some((ua, _)), Some((ub, _))) = (&a.basic, &b.basic) {
                if ua == ub {
                    return Err(shared("user name"));
                }
            }
        }
    }
    Ok(loaded)
}

fn load_each(clients: &[ApiClient]) -> Result<Vec<Client>, CredentialError> {
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
    let credentials = trim_secret(credentials);
    let mut found = None;
    // `Token` is how the Kubernetes manager's clients present the same kind of secret.
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
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
        let presented = digest(trim_secret(password).as_bytes());
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
        assert_eq!(who("Token s3cret").as_deref(), Some("a"));
        assert_eq!(who("token s3cret").as_deref(), Some("a"));
        assert_eq!(who("TOKEN s3cret").as_deref(), Some("a"));
        assert_eq!(who("Token s3cre"), None);
        assert_eq!(who("Tokens s3cret"), None);
        // A token is never a basic password, nor the other way round.
        assert_eq!(who("Token hub:pw"), None);
        let as_basic = base64::engine::general_purpose::STANDARD.encode("a:s3cret");
        assert_eq!(who(&format!("Basic {as_basic}")), None);
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
    fn file_and_header_are_trimmed_by_the_same_rule() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (stored, presented)) in [
            ("tok\n", "Bearer tok"),
            ("tok \r\n", "Bearer tok"),
            (" \ttok", "Bearer tok"),
            ("tok", "Bearer tok "),
            ("tok", "Bearer \ttok\t"),
        ]
        .iter()
        .enumerate()
        {
            let path = dir.path().join(format!("t{i}"));
            std::fs::write(&path, stored).unwrap();
            let clients = load(&[ApiClient {
                name: "a".into(),
                token_file: Some(path.display().to_string()),
                ..Default::default()
            }])
            .unwrap();
            assert!(
                authenticate(&clients, Some(presented.as_bytes())).is_some(),
                "{stored:?} vs {presented:?}"
            );
            // Inner whitespace is part of the secret.
            assert!(authenticate(&clients, Some(b"Bearer t ok")).is_none());
        }
        std::env::set_var("PORTICO_TEST_AUTH_PW2", "pw \n");
        let clients = load(&[ApiClient {
            name: "b".into(),
            username: Some("hub".into()),
            password_env: Some("PORTICO_TEST_AUTH_PW2".into()),
            ..Default::default()
        }])
        .unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode("hub:pw");
        assert!(authenticate(&clients, Some(format!("Basic {basic}").as_bytes())).is_some());
    }

    #[test]
    fn two_clients_with_one_secret_are_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "same\n").unwrap();
        std::fs::write(&b, "same").unwrap();
        let client = |name: &str, path: &std::path::Path| ApiClient {
            name: name.into(),
            token_file: Some(path.display().to_string()),
            ..Default::default()
        };
        let err = load(&[client("one", &a), client("two", &b)]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"one\"") && text.contains("\"two\"") && text.contains("token"),
            "{text}"
        );
        std::env::set_var("PORTICO_TEST_AUTH_PW3", "x");
        std::env::set_var("PORTICO_TEST_AUTH_PW4", "y");
        let basic = |name: &str, var: &str| ApiClient {
            name: name.into(),
            username: Some("hub".into()),
            password_env: Some(var.into()),
            ..Default::default()
        };
        let err = load(&[
            basic("one", "PORTICO_TEST_AUTH_PW3"),
            basic("two", "PORTICO_TEST_AUTH_PW4"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("user name"), "{err}");
        std::fs::write(&b, "other").unwrap();
        assert!(load(&[client("one", &a), client("two", &b)]).is_ok());
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
