//! Signatures of webhook deliveries: what lets a receiver tell that a payload came from us.
//!
//! Three schemes are sent side by side, so that a receiver's existing library verifies one of
//! them without configuration:
//!
//! - GitHub's `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the body keyed by the
//!   hook's secret;
//! - Gitea's `X-Gitea-Signature: <hex>`, the same value without the prefix;
//! - [Standard Webhooks](https://www.standardwebhooks.com/)' `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature: v1,<base64>`, the HMAC-SHA256 of `"{id}.{timestamp}.{body}"`.
//!
//! ```
//! use platform_git::signature::signature_headers;
//!
//! let headers = signature_headers(Some("s3cret"), "dlv_1", 1_700_000_000, b"{}");
//! assert!(headers.iter().any(|(name, _)| name == "X-Hub-Signature-256"));
//! assert!(headers.iter().any(|(name, value)| name == "webhook-id" && value == "dlv_1"));
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix Standard Webhooks gives a secret whose remainder is the base64 of the key.
pub const STANDARD_WEBHOOKS_SECRET_PREFIX: &str = "whsec_";

/// Returns the headers that identify and sign one delivery attempt.
///
/// `webhook-id` (the delivery id, the same on every retry) and `webhook-timestamp` (seconds since
/// the Unix epoch, fresh for every attempt) are always present. With a non-empty `secret`, the
/// three signatures described in the [module documentation](self) follow:
///
/// - `X-Hub-Signature-256` and `X-Gitea-Signature` are keyed by the secret's UTF-8 bytes, exactly
///   as GitHub and Gitea do;
/// - `webhook-signature` is keyed, as the Standard Webhooks libraries expect, by the base64-decoded
///   remainder of a secret that starts with `whsec_`; any other secret (or a `whsec_` secret whose
///   remainder is not valid base64) keys it with its own UTF-8 bytes, whole.
///
/// An empty secret is treated as no secret: a signature anyone can compute proves nothing.
pub fn signature_headers(
    secret: Option<&str>,
    delivery_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let mut headers = vec![
        ("webhook-id".to_owned(), delivery_id.to_owned()),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
    ];
    let Some(secret) = secret.filter(|secret| !secret.is_empty()) else {
        return headers;
    };
    let hex = hex::encode(hmac_sha256(secret.as_bytes(), &[body]));
    headers.push(("X-Hub-Signature-256".to_owned(), format!("sha256={hex}")));
    headers.push(("X-Gitea-Signature".to_owned(), hex));
    let key = standard_webhooks_key(secret);
    let timestamp = timestamp.to_string();
    let mac = hmac_sha256(&key, &[delivery_id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
    headers.push(("webhook-signature".to_owned(), format!("v1,{}", STANDARD.encode(mac))));
    headers
}

/// Tells whether `header_value`, an `X-Hub-Signature-256` header as received, signs `body`
/// with `secret`: what a receiver checks before trusting a delivery.
///
/// `header_value` must have GitHub's form, `sha256=` followed by the hex of the HMAC-SHA256 of
/// the body keyed by the secret's UTF-8 bytes; `body` must be the exact bytes received, before
/// any parsing. The comparison takes the same time wherever the first differing byte is, so it
/// reveals nothing about the expected value. Anything else is `false`: another prefix, no
/// prefix, hex that does not decode or has the wrong length, and an empty secret (which
/// [`signature_headers`] never signs with).
///
/// ```
/// use platform_git::signature::{signature_headers, verify_hub_signature};
///
/// let body = br#"{"ref":"refs/heads/main"}"#;
/// let headers = signature_headers(Some("s3cret"), "dlv_1", 1_700_000_000, body);
/// let (_, signature) = headers
///     .iter()
///     .find(|(name, _)| name == "X-Hub-Signature-256")
///     .expect("a secret was given");
///
/// assert!(verify_hub_signature("s3cret", body, signature));
/// assert!(!verify_hub_signature("another secret", body, signature));
/// assert!(!verify_hub_signature("s3cret", br#"{"ref":"refs/heads/evil"}"#, signature));
/// ```
pub fn verify_hub_signature(secret: &str, body: &[u8], header_value: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    let Some(expected) = header_value.strip_prefix("sha256=").and_then(|hex| hex::decode(hex).ok())
    else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts a key of any length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The key of the Standard Webhooks signature: see [`signature_headers`].
fn standard_webhooks_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(STANDARD_WEBHOOKS_SECRET_PREFIX)
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The HMAC-SHA256 of the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// GitHub's documented example ("Validating webhook deliveries"), also reproduced with
    /// python3: `hmac.new(b"It's a Secret to Everybody", b"Hello, World!", "sha256").hexdigest()`.
    #[test]
    fn hub_and_gitea_signatures_match_githubs_documented_example() {
        let headers =
            signature_headers(Some("It's a Secret to Everybody"), "d", 1, b"Hello, World!");
        let expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(header(&headers, "X-Hub-Signature-256"), Some(&*format!("sha256={expected}")));
        assert_eq!(header(&headers, "X-Gitea-Signature"), Some(expected));
    }

    /// The vector of the Standard Webhooks reference libraries (Svix's `testSignFunctionWorks`),
    /// reproduced with python3's `hmac` over the base64-decoded `whsec_` remainder.
    #[test]
    fn standard_webhooks_signature_matches_the_reference_vector() {
        let headers = signature_headers(
            Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            header(&headers, "webhook-signature"),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(header(&headers, "webhook-id"), Some("msg_p5jXN8AQM9LWM0D4loKWxJek"));
        assert_eq!(header(&headers, "webhook-timestamp"), Some("1614265330"));
    }

    /// Computed with python3:
    /// `hmac.new(b"s3cret", b'{"ref":"refs/heads/main"}', "sha256").hexdigest()` and
    /// `base64.b64encode(hmac.new(b"s3cret", b'dlv_1.1700000000.{"ref":"refs/heads/main"}',
    /// "sha256").digest())`.
    #[test]
    fn a_plain_secret_keys_every_scheme_with_its_own_bytes() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let headers = signature_headers(Some("s3cret"), "dlv_1", 1_700_000_000, body);
        let hex = "232a5e067b6a5aa567ed5a1d21a0dffaf6ef0eeecb6bd9bcf43b3d5ef3fc4f43";
        assert_eq!(
            headers,
            vec![
                ("webhook-id".to_owned(), "dlv_1".to_owned()),
                ("webhook-timestamp".to_owned(), "1700000000".to_owned()),
                ("X-Hub-Signature-256".to_owned(), format!("sha256={hex}")),
                ("X-Gitea-Signature".to_owned(), hex.to_owned()),
                (
                    "webhook-signature".to_owned(),
                    "v1,IezqNJd7J5Ta1XYobPBHqWjHhIDLDBlofPaCWLkfB3M=".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_whsec_secret_that_is_not_base64_keys_with_its_own_bytes() {
        let secret = "whsec_not base64!";
        assert_eq!(standard_webhooks_key(secret), secret.as_bytes());
        let headers = signature_headers(Some(secret), "id", 0, b"");
        assert!(header(&headers, "webhook-signature").is_some());
    }

    /// GitHub's documented example again, from the receiving side.
    const GITHUB_EXAMPLE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    const GITHUB_SECRET: &str = "It's a Secret to Everybody";

    #[test]
    fn a_hub_signature_verifies_with_its_secret_and_body() {
        assert!(verify_hub_signature(GITHUB_SECRET, b"Hello, World!", GITHUB_EXAMPLE));
        let body = br#"{"ref":"refs/heads/main"}"#;
        let headers = signature_headers(Some("s3cret"), "dlv_1", 1_700_000_000, body);
        let signature = header(&headers, "X-Hub-Signature-256").expect("signed");
        assert!(verify_hub_signature("s3cret", body, signature));
    }

    #[test]
    fn a_hub_signature_does_not_verify_with_another_secret() {
        assert!(!verify_hub_signature(
            "It's a secret to everybody",
            b"Hello, World!",
            GITHUB_EXAMPLE
        ));
        assert!(!verify_hub_signature("", b"Hello, World!", GITHUB_EXAMPLE));
    }

    #[test]
    fn a_hub_signature_does_not_verify_a_tampered_body() {
        for body in [&b"Hello, World?"[..], b"Hello, World!\n", b"", b"Hello, World"] {
            assert!(!verify_hub_signature(GITHUB_SECRET, body, GITHUB_EXAMPLE), "{body:?}");
        }
    }

    #[test]
    fn a_malformed_hub_signature_does_not_verify() {
        let hex = GITHUB_EXAMPLE.strip_prefix("sha256=").expect("prefixed");
        for value in [
            String::new(),
            "sha256=".to_owned(),
            hex.to_owned(),
            format!("sha1={hex}"),
            format!("SHA256={hex}"),
            format!(" sha256={hex}"),
            format!("sha256={hex} "),
            format!("sha256={}", &hex[..63]),
            format!("sha256={}", &hex[..62]),
            format!("sha256={hex}00"),
            format!("sha256={}zz", &hex[..62]),
            // The Standard Webhooks form of a signature is not the hub's.
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned(),
        ] {
            assert!(!verify_hub_signature(GITHUB_SECRET, b"Hello, World!", &value), "{value:?}");
        }
    }

    #[test]
    fn a_hub_signature_in_upper_case_hex_verifies() {
        let upper = format!("sha256={}", GITHUB_EXAMPLE["sha256=".len()..].to_ascii_uppercase());
        assert!(verify_hub_signature(GITHUB_SECRET, b"Hello, World!", &upper));
    }

    #[test]
    fn without_a_secret_only_the_id_and_timestamp_are_sent() {
        for secret in [None, Some("")] {
            let headers = signature_headers(secret, "dlv_2", 42, b"body");
            assert_eq!(
                headers,
                vec![
                    ("webhook-id".to_owned(), "dlv_2".to_owned()),
                    ("webhook-timestamp".to_owned(), "42".to_owned()),
                ]
            );
        }
    }
}
