//! Service names as clients send them, and the object names made from them.
//!
//! A Portico client's `uuidcode` must already be a lowercase DNS label. The Kubernetes manager's
//! clients send whatever their hub calls the server, so for them ([`super::config::Wire::K8smgr`])
//! any name is taken exactly as sent and mapped to an object name **injectively** — two names
//! never share objects:
//!
//! - a lowercase DNS label of at most [`MAX_OBJECT_ID`] characters that does not begin with
//!   [`ENCODED_PREFIX`] is its own object name (the 32 hex digits Jupyter-JSC sends stay as they
//!   are, so the hub's own `svc-<name>-<start_id>` is the Service's name);
//! - any other name becomes `x--` followed by its UTF-8 bytes in lowercase base32hex
//!   (RFC 4648 §7, digits `0-9a-v`, no padding). Names of the first kind never begin with
//!   `x--`, and base32hex is one-to-one, so no two names meet. A name whose encoding does not
//!   fit in [`MAX_OBJECT_ID`] characters (more than 23 bytes) is refused.
//!
//! Pure functions; the request path's percent-escapes are decoded here too.

use crate::core::label::is_dns_label;

/// Longest object id: objects are named `<id>`, `<id>-env`, `svc-<id>-<start_id>`, …
pub const MAX_OBJECT_ID: usize = 40;
/// What every encoded name begins with, and no name used as it is may begin with.
pub const ENCODED_PREFIX: &str = "x--";

const BASE32HEX: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// Why a name cannot be a service's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the service name is empty")]
    Empty,
    #[error("the service name {0:?} contains '/', which no request path can address")]
    Slash(String),
    #[error("the service name {name:?} is encoded as {encoded:?} ({len} characters), more than the {max} an object name may use; names that are not lowercase DNS labels may have at most 23 bytes")]
    TooLong {
        name: String,
        encoded: String,
        len: usize,
        max: usize,
    },
}

/// Whether `id` is used as it is (Portico's own rule for `uuidcode`).
pub fn is_plain(id: &str) -> bool {
    id.len() <= MAX_OBJECT_ID && is_dns_label(id)
}

fn base32hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32HEX[((buffer >> bits) & 31) as usize] as char);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(BASE32HEX[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The object name of a service name sent by a manager's client (see the module's rules).
pub fn object_id(name: &str) -> Result<String, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.contains('/') {
        return Err(NameError::Slash(name.to_string()));
    }
    if is_plain(name) && !name.starts_with(ENCODED_PREFIX) {
        return Ok(name.to_string());
    }
    let encoded = format!("{ENCODED_PREFIX}{}", base32hex(name.as_bytes()));
    if encoded.len() > MAX_OBJECT_ID {
        return Err(NameError::TooLong {
            name: name.to_string(),
            len: encoded.len(),
            encoded,
            max: MAX_OBJECT_ID,
        });
    }
    Ok(encoded)
}

/// A path segment with its percent-escapes decoded (`%2F` stays refused later: a name with
/// `/` cannot be addressed). `None` for a broken escape or bytes that are not UTF-8.
pub fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            // from_str_radix would take a sign ("%+1"); an escape is two hex digits.
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The length a Kubernetes Service name may have (a DNS-1035 label).
pub const MAX_SERVICE_NAME: usize = 63;

/// What the manager calls a start's id (its `drf_id`), and its templates' `<id>`:
/// `<id>-<start_id>`.
pub fn start_object_id(object_id: &str, start_id: &str) -> String {
    format!("{object_id}-{start_id}")
}

/// The lab's Service as the manager's hub computes it for itself: `svc-<id>-<start_id>`.
pub fn lab_service(object_id: &str, start_id: &str) -> String {
    format!("svc-{}", start_object_id(object_id, start_id))
}

/// The Secret holding `env` for one start of a manager's client.
pub fn env_secret(object_id: &str, start_id: &str) -> String {
    format!("secret-{object_id}-{start_id}")
}

/// The Secret holding the hub's certificates for one start of a manager's client.
pub fn certs_secret(object_id: &str, start_id: &str) -> String {
    format!("secret-certs-{object_id}-{start_id}")
}

/// Why a manager client's `start_id` cannot name the start's objects, if it cannot: it becomes
/// part of a Service name, so it must be lowercase letters, digits and inner `-`, and
/// `svc-<id>-<start_id>` must fit in 63 characters.
pub fn start_id_problem(object_id: &str, start_id: &str) -> Option<String> {
    let service = lab_service(object_id, start_id);
    if !is_dns_label(start_id) {
        return Some(format!(
            "start_id {start_id:?} becomes part of the lab's Service name {service:?}: use lowercase letters, digits and inner '-' (the hub sends 8 hex digits)"
        ));
    }
    if service.len() > MAX_SERVICE_NAME {
        return Some(format!(
            "the lab's Service name {service:?} would have {} characters, more than {MAX_SERVICE_NAME}; send a shorter start_id",
            service.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn decode_base32hex(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buffer: u32 = 0;
        let mut bits = 0;
        for c in text.bytes() {
            let v = BASE32HEX.iter().position(|b| *b == c).unwrap() as u32;
            buffer = (buffer << 5) | v;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                out.push((buffer >> bits) as u8);
                buffer &= (1 << bits) - 1;
            }
        }
        out
    }

    #[test]
    fn plain_names_are_kept_as_sent() {
        for name in [
            "0123456789abcdef0123456789abcdef",
            "lab-1",
            "a",
            "x-1",
            "xn--bcher-kva",
        ] {
            assert_eq!(object_id(name).unwrap(), name);
        }
    }

    #[test]
    fn other_names_are_encoded_and_the_encoding_decodes_back() {
        for name in [
            "My-Lab", "lab_1", "lab.1", "-lab", "lab-", "x--abc", "x--", "ü", "a b", "..",
        ] {
            let id = object_id(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(id.starts_with(ENCODED_PREFIX), "{name} -> {id}");
            assert!(is_plain(&id), "{name} -> {id} is not a DNS label");
            let back = decode_base32hex(&id[ENCODED_PREFIX.len()..]);
            assert_eq!(back, name.as_bytes(), "{name} -> {id}");
        }
        // Known vectors (RFC 4648 §10, lowercased, unpadded).
        assert_eq!(base32hex(b"f"), "co");
        assert_eq!(base32hex(b"fo"), "cpng");
        assert_eq!(base32hex(b"foo"), "cpnmu");
        assert_eq!(base32hex(b"foob"), "cpnmuog");
        assert_eq!(base32hex(b"fooba"), "cpnmuoj1");
        assert_eq!(base32hex(b"foobar"), "cpnmuoj1e8");
    }

    #[test]
    fn no_two_names_share_an_object_id() {
        // Every name up to three characters over an alphabet that has plain characters, the
        // separator, the prefix's letter and characters that force the encoding.
        let alphabet = ['a', 'x', '-', 'A', '_', '0', 'v'];
        let mut names = vec![String::new()];
        let mut all = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let mut next = Vec::new();
            for n in &names {
                for c in alphabet {
                    next.push(format!("{n}{c}"));
                }
            }
            all.extend(next.iter().cloned());
            names = next;
        }
        all.insert("x--".to_string());
        all.insert("x--co".to_string());
        all.insert("f".to_string());
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for name in all {
            let Ok(id) = object_id(&name) else { continue };
            if let Some(other) = seen.insert(id.clone(), name.clone()) {
                panic!("{name:?} and {other:?} both map to {id:?}");
            }
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(object_id(""), Err(NameError::Empty));
        assert!(matches!(object_id("a/b"), Err(NameError::Slash(_))));
        let long = "A".repeat(24);
        let err = object_id(&long).unwrap_err();
        assert!(err.to_string().contains("23 bytes"), "{err}");
        assert!(object_id(&"A".repeat(23)).is_ok());
        // A plain name that is too long is encoded, and so refused too.
        assert!(object_id(&"a".repeat(41)).is_err());
        assert_eq!(object_id(&"a".repeat(40)).unwrap(), "a".repeat(40));
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode_segment("lab-1").as_deref(), Some("lab-1"));
        assert_eq!(decode_segment("My%20Lab").as_deref(), Some("My Lab"));
        assert_eq!(decode_segment("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(decode_segment("%C3%BC").as_deref(), Some("ü"));
        assert_eq!(decode_segment("%"), None);
        assert_eq!(decode_segment("%4"), None);
        assert_eq!(decode_segment("%zz"), None);
        assert_eq!(decode_segment("%ff"), None);
        assert_eq!(decode_segment("%+1"), None);
    }

    #[test]
    fn per_start_names() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            lab_service(id, "1a2b3c4d"),
            "svc-0123456789abcdef0123456789abcdef-1a2b3c4d"
        );
        assert_eq!(env_secret("a", "b"), "secret-a-b");
        assert_eq!(start_object_id("a", "b"), "a-b");
        assert_eq!(certs_secret("a", "b"), "secret-certs-a-b");
        assert_eq!(start_id_problem(id, "1a2b3c4d"), None);
        assert!(start_id_problem(id, "1A2B").unwrap().contains("lowercase"));
        assert!(start_id_problem(id, "a.b").is_some());
        assert!(start_id_problem(id, &"a".repeat(30))
            .unwrap()
            .contains("63"));
        assert_eq!(start_id_problem(&"a".repeat(40), &"a".repeat(18)), None);
    }
}
