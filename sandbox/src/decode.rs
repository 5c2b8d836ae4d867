//! What the apiserver does while decoding a request body, before defaulting and admission: byte
//! fields (`[]byte` in Go, base64 in JSON) are decoded and stored in canonical base64. Go's
//! decoder skips `\r` and `\n`, so a caBundle wrapped over several lines (as kustomize writes a
//! Secret's data it copies) is accepted and stored on one line; anything else that is not base64
//! is a 400 `… cannot be handled as a …: illegal base64 data at input byte N`.

use base64::Engine as _;
use serde_json::Value;

use crate::error::ApiError;
use crate::resources::ResourceInfo;

/// Decodes and re-encodes the byte fields of `obj`, or says why it cannot be decoded.
pub fn byte_fields(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    if info.group != "admissionregistration.k8s.io"
        || !info.plural.ends_with("webhookconfigurations")
    {
        return Ok(());
    }
    let Some(hooks) = obj.get_mut("webhooks").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for hook in hooks {
        let Some(ca) = hook.pointer_mut("/clientConfig/caBundle") else {
            continue;
        };
        let Some(text) = ca.as_str() else { continue };
        match go_base64(text) {
            Ok(bytes) => *ca = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            Err(at) => {
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{v}\" cannot be handled as a {kind}: illegal base64 data at input byte {at}",
                    kind = info.kind,
                    v = info.version
                )))
            }
        }
    }
    Ok(())
}

/// Standard base64 as Go's `encoding/base64` reads it: `\r` and `\n` skipped; on error, the
/// offset in the original text.
fn go_base64(text: &str) -> Result<Vec<u8>, usize> {
    let kept: Vec<(usize, u8)> = text
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b != b'\r' && *b != b'\n')
        .collect();
    let clean: Vec<u8> = kept.iter().map(|(_, b)| *b).collect();
    let original = |i: usize| kept.get(i).map_or(text.len(), |(at, _)| *at);
    base64::engine::general_purpose::STANDARD
        .decode(&clean)
        .map_err(|e| match e {
            base64::DecodeError::InvalidByte(i, _)
            | base64::DecodeError::InvalidLastSymbol(i, _) => original(i),
            _ => original(clean.len().saturating_sub(clean.len() % 4)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(kind: &str) -> ResourceInfo {
        crate::resources::builtins()
            .into_iter()
            .find(|r| r.kind == kind)
            .unwrap()
    }

    #[test]
    fn a_wrapped_ca_bundle_is_stored_on_one_line_and_junk_is_refused_as_the_apiserver_does() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let one_line = base64::engine::general_purpose::STANDARD.encode(pem);
        let wrapped: String = one_line
            .as_bytes()
            .chunks(70)
            .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
            .collect();
        let mut obj = json!({"webhooks": [{"name": "a", "clientConfig": {"caBundle": wrapped}}, {"name": "b", "clientConfig": {"url": "https://x"}}]});
        byte_fields(&info("ValidatingWebhookConfiguration"), &mut obj).unwrap();
        assert_eq!(
            obj["webhooks"][0]["clientConfig"]["caBundle"],
            json!(one_line)
        );
        // Recorded from kube-apiserver v1.37.2 (`kubectl apply` of caBundle "not base64!").
        let mut junk = json!({"webhooks": [{"clientConfig": {"caBundle": "not base64!"}}]});
        let e = byte_fields(&info("MutatingWebhookConfiguration"), &mut junk).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "MutatingWebhookConfiguration in version \"v1\" cannot be handled as a MutatingWebhookConfiguration: illegal base64 data at input byte 3"
        );
        // Other kinds are left alone.
        let mut cm = json!({"data": {"caBundle": "not base64!"}});
        byte_fields(&info("ConfigMap"), &mut cm).unwrap();
    }
}
