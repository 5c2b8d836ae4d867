//! The prefix: a label-safe, injective encoding of a user name.
//!
//! A route value is `<prefix>-<tag>`. For it to be unambiguous the prefix never contains `-`, so
//! the first `-` of a route value always ends the prefix, whatever the tag holds. The encoding:
//!
//! 1. a user named in the configured map gets the mapped prefix (plain alphanumerics, reserved:
//!    nobody else may encode to it);
//! 2. a name of ASCII letters and digits only, no longer than `maxPrefixLength`, is its own prefix
//!    (`user1` → `user1`, case kept);
//! 3. any other name is hashed: up to 8 leading letters/digits of the name for readability, `_`,
//!    then 16 base32 characters of the SHA-256 of the whole name (`alice@example.com` →
//!    `alice_…`). Nothing is truncated or replaced without the hash standing for the whole name,
//!    so `a@b` and `a.b` never meet.
//!
//! Plain prefixes contain no `_`, hashed ones exactly one, so the two forms cannot collide; two
//! hashed names collide only if 80 bits of SHA-256 do.
//!
//! A namespace identity (namespace mode, or the unstamped-workload fallback) is its own space:
//! it is the user `system:namespace:<ns>` ([`NAMESPACE_USER`]), and its prefix is `ns.` followed by
//! the namespace with `-` written `.` (`team-a` → `ns.team.a`), or `ns.<stem>_<hash>` when that
//! would be longer than `maxPrefixLength`. Only namespace prefixes contain `.`, so namespace
//! `user1` (`ns.user1`) is never user `user1` (`user1`).

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

/// How many leading characters of a hashed name are kept for people to read.
const STEM: usize = 8;
/// Base32 characters of hash: 16 × 5 = 80 bits.
const HASH_CHARS: usize = 16;
/// The longest prefix the hashed form produces.
pub const MAX_HASHED_LEN: usize = STEM + 1 + HASH_CHARS;

/// A user's prefix: non-empty, label-safe, never containing `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix(String);

impl Prefix {
    /// A prefix read back from an owner label Portico wrote.
    pub fn from_encoded(encoded: &str) -> Prefix {
        Prefix(encoded.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The user name a namespace identity has. Kubernetes reserves the `system:` prefix for its own
/// identities, and Portico refuses requesters whose name starts with this one.
pub const NAMESPACE_USER: &str = "system:namespace:";

/// The user a namespace stands for.
pub fn namespace_user(namespace: &str) -> String {
    format!("{NAMESPACE_USER}{namespace}")
}

/// Why a user gets no prefix, or a mapped prefix is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("the user name is empty")]
    EmptyUser,
    #[error("user {user:?} encodes to {prefix:?}, which the configured prefix map reserves for {owner:?}")]
    Reserved {
        user: String,
        prefix: String,
        owner: String,
    },
    #[error("must be 1 to {0} ASCII letters or digits")]
    BadMapped(usize),
}

/// The prefix rules: the explicit map and the longest name kept verbatim.
#[derive(Debug, Clone, Copy)]
pub struct PrefixRules<'a> {
    pub map: &'a BTreeMap<String, String>,
    pub max_len: usize,
}

impl PrefixRules<'_> {
    /// The prefix of `user`, or why it has none.
    pub fn prefix_for(&self, user: &str) -> Result<Prefix, PrefixError> {
        if user.is_empty() {
            return Err(PrefixError::EmptyUser);
        }
        if let Some(mapped) = self.map.get(user) {
            return Ok(Prefix(mapped.clone()));
        }
        if let Some(namespace) = user.strip_prefix(NAMESPACE_USER) {
            return namespace_prefix(namespace, self.max_len);
        }
        let natural = natural_prefix(user, self.max_len);
        if let Some((owner, _)) = self.map.iter().find(|(_, p)| **p == natural) {
            return Err(PrefixError::Reserved {
                user: user.to_string(),
                prefix: natural,
                owner: owner.clone(),
            });
        }
        Ok(Prefix(natural))
    }
}

/// A namespace's prefix: `ns.` and the namespace with `-` as `.`, or its hash form when long.
fn namespace_prefix(namespace: &str, max_len: usize) -> Result<Prefix, PrefixError> {
    if namespace.is_empty() {
        return Err(PrefixError::EmptyUser);
    }
    let dotted = namespace.replace('-', ".");
    let is_dns_label = namespace
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if is_dns_label && 3 + dotted.len() <= max_len {
        return Ok(Prefix(format!("ns.{dotted}")));
    }
    let stem: String = namespace
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(STEM)
        .collect();
    Ok(Prefix(format!("ns.{stem}_{}", hash32(namespace))))
}

/// The encoding without the map: the name itself when it is plain and short, else its hash form.
pub fn natural_prefix(user: &str, max_len: usize) -> String {
    if is_plain(user) && user.len() <= max_len {
        return user.to_string();
    }
    let stem: String = user
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .take(STEM)
        .collect();
    let stem = if stem.is_empty() {
        "u".to_string()
    } else {
        stem
    };
    format!("{stem}_{}", hash32(user))
}

/// ASCII letters and digits only, non-empty.
fn is_plain(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Checks a prefix given in the configured map.
pub fn check_mapped_prefix(prefix: &str, max_len: usize) -> Result<(), PrefixError> {
    if is_plain(prefix) && prefix.len() <= max_len {
        Ok(())
    } else {
        Err(PrefixError::BadMapped(max_len))
    }
}

/// The first 80 bits of SHA-256 in lowercase RFC 4648 base32 (`a-z2-7`): label-safe.
fn hash32(s: &str) -> String {
    sha256_base32(s, HASH_CHARS)
}

/// The lowercase RFC 4648 base32 alphabet: letters and digits valid in labels and DNS names.
pub(crate) const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The longest hash [`sha256_base32`] gives: the first 128 bits of the digest, 5 bits a character.
pub(crate) const MAX_HASH_CHARS: usize = 25;

/// The first `chars` × 5 bits of SHA-256 of `s` in lowercase base32 (at most
/// [`MAX_HASH_CHARS`] characters). Shared by the prefix and host encodings so that both hash the
/// same way; `chars = 16` is the prefix's hash and must never change (prefixes are stored on pods).
pub(crate) fn sha256_base32(s: &str, chars: usize) -> String {
    let chars = chars.min(MAX_HASH_CHARS);
    let digest = Sha256::digest(s.as_bytes());
    let mut bits: u128 = 0;
    for byte in &digest[..16] {
        bits = (bits << 8) | u128::from(*byte);
    }
    (1..=chars)
        .map(|i| BASE32_ALPHABET[((bits >> (128 - 5 * i)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::label::validate_name_part;
    use proptest::prelude::*;

    fn rules(map: &BTreeMap<String, String>) -> PrefixRules<'_> {
        PrefixRules { map, max_len: 40 }
    }

    #[test]
    fn plain_names_encode_to_themselves() {
        let map = BTreeMap::new();
        for user in ["user1", "User1", "alice", "a", "0"] {
            assert_eq!(rules(&map).prefix_for(user).unwrap().as_str(), user);
        }
    }

    #[test]
    fn names_that_cannot_be_kept_are_hashed_readably_and_validly() {
        let map = BTreeMap::new();
        for user in [
            "alice@example.com",
            "system:serviceaccount:team:runner",
            "https://issuer.example#1234",
            "Ünïcode",
            "a-b",
            "first.last",
            "x/y",
            &"a".repeat(41),
        ] {
            let p = rules(&map).prefix_for(user).unwrap();
            assert!(validate_name_part(p.as_str()).is_ok(), "{user} → {p}");
            assert!(!p.as_str().contains('-'), "{user} → {p}");
            assert!(p.as_str().len() <= MAX_HASHED_LEN, "{user} → {p}");
            assert_eq!(p.as_str().matches('_').count(), 1, "{user} → {p}");
        }
        assert!(rules(&map)
            .prefix_for("alice@example.com")
            .unwrap()
            .as_str()
            .starts_with("alice_"));
        assert!(rules(&map)
            .prefix_for("Ünïcode")
            .unwrap()
            .as_str()
            .starts_with("u_"));
    }

    #[test]
    fn lookalike_names_never_meet() {
        let map = BTreeMap::new();
        let r = rules(&map);
        assert_ne!(r.prefix_for("a@b").unwrap(), r.prefix_for("a.b").unwrap());
        assert_ne!(r.prefix_for("a-b").unwrap(), r.prefix_for("a_b").unwrap());
        assert_ne!(r.prefix_for("ab").unwrap(), r.prefix_for("a-b").unwrap());
    }

    #[test]
    fn the_map_overrides_and_reserves_its_prefixes() {
        let map: BTreeMap<String, String> =
            [("alice@example.com".to_string(), "alice".to_string())].into();
        let r = rules(&map);
        assert_eq!(r.prefix_for("alice@example.com").unwrap().as_str(), "alice");
        let err = r.prefix_for("alice").unwrap_err();
        assert!(matches!(err, PrefixError::Reserved { .. }), "{err}");
        assert!(err.to_string().contains("alice@example.com"));
    }

    #[test]
    fn a_namespace_is_never_the_user_of_the_same_name() {
        let map = BTreeMap::new();
        let r = rules(&map);
        let ns = r.prefix_for(&namespace_user("user1")).unwrap();
        assert_eq!(ns.as_str(), "ns.user1");
        assert_ne!(ns, r.prefix_for("user1").unwrap());
        assert_eq!(
            r.prefix_for(&namespace_user("team-a")).unwrap().as_str(),
            "ns.team.a"
        );
        // A long namespace is hashed, still in the namespace space and label-safe.
        let long = r.prefix_for(&namespace_user(&"n".repeat(60))).unwrap();
        assert!(long.as_str().starts_with("ns.n") && long.as_str().contains('_'));
        assert!(validate_name_part(long.as_str()).is_ok() && !long.as_str().contains('-'));
    }

    #[test]
    fn hashed_prefixes_are_stable_across_releases() {
        // Prefixes are stored in owner labels on running pods: the encoding must never drift.
        let map = BTreeMap::new();
        let r = rules(&map);
        assert_eq!(
            r.prefix_for("alice@example.com").unwrap().as_str(),
            "alice_76gzqgp4byjl6dje"
        );
        assert_eq!(
            r.prefix_for("Ünïcode").unwrap().as_str(),
            "u_aczex2amrxlotv3o"
        );
    }

    #[test]
    fn shorter_hashes_are_leading_characters_of_longer_ones() {
        let long = sha256_base32("x", MAX_HASH_CHARS);
        assert_eq!(long.len(), MAX_HASH_CHARS);
        assert_eq!(sha256_base32("x", 12), long[..12]);
        assert_eq!(sha256_base32("x", 99), long);
    }

    #[test]
    fn empty_user_has_no_prefix() {
        let map = BTreeMap::new();
        assert_eq!(rules(&map).prefix_for(""), Err(PrefixError::EmptyUser));
    }

    proptest! {
        #[test]
        fn encoding_is_injective_and_label_safe(a in ".{1,60}", b in ".{1,60}") {
            let map = BTreeMap::new();
            let r = rules(&map);
            let (pa, pb) = (r.prefix_for(&a).unwrap(), r.prefix_for(&b).unwrap());
            prop_assert!(validate_name_part(pa.as_str()).is_ok());
            prop_assert!(!pa.as_str().contains('-'));
            prop_assert_eq!(a == b, pa == pb);
        }

        #[test]
        fn namespace_and_user_spaces_never_meet(ns in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", user in ".{1,60}", other in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            let map = BTreeMap::new();
            let r = rules(&map);
            prop_assume!(!user.starts_with(NAMESPACE_USER));
            let pn = r.prefix_for(&namespace_user(&ns)).unwrap();
            prop_assert!(validate_name_part(pn.as_str()).is_ok());
            prop_assert!(!pn.as_str().contains('-'));
            prop_assert_ne!(&pn, &r.prefix_for(&user).unwrap());
            prop_assert_eq!(ns == other, pn == r.prefix_for(&namespace_user(&other)).unwrap());
        }

        #[test]
        fn injective_on_near_identical_names(stem in "[a-zA-Z0-9]{0,12}", sep in "[-@._:/#]", tail in "[a-z0-9]{0,6}") {
            let map = BTreeMap::new();
            let r = rules(&map);
            let joined = format!("{stem}{sep}{tail}");
            let plain = format!("{stem}{tail}");
            prop_assume!(!plain.is_empty());
            prop_assert_ne!(r.prefix_for(&joined).unwrap(), r.prefix_for(&plain).unwrap());
        }
    }
}
