//! HMAC-SHA256 signing and verification of messages, the only place rustpx does either.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::WireError;

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies the four JSON frames of a message with the connection's key.
///
/// An empty key disables signing, as the Jupyter specification allows; rustpx itself always
/// generates a random key, so that case only arises when a user hands us such a connection file.
#[derive(Clone)]
pub struct Signer {
    mac: Option<HmacSha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Signer")
            .field("enabled", &self.mac.is_some())
            .finish()
    }
}

/// The length of a hex hmac-sha256 signature.
const SIGNATURE_HEX_LEN: usize = 64;

impl Signer {
    /// A signer for `scheme` (only `hmac-sha256` is supported) and `key`.
    pub fn new(scheme: &str, key: &str) -> Result<Self, WireError> {
        if key.is_empty() {
            return Ok(Signer { mac: None });
        }
        if scheme != "hmac-sha256" {
            return Err(WireError::UnsupportedScheme(scheme.to_owned()));
        }
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = HmacSha256::new_from_slice(key.as_bytes()).ok();
        Ok(Signer { mac })
    }

    /// The hex signature of the frames, or an empty string when signing is disabled.
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        match &self.mac {
            None => String::new(),
            Some(mac) => {
                let mut mac = mac.clone();
                for part in parts {
                    mac.update(part);
                }
                hex::encode(mac.finalize().into_bytes())
            }
        }
    }

    /// Checks `signature` (hex) against the frames in constant time.
    pub fn verify(&self, parts: &[&[u8]], signature: &[u8]) -> Result<(), WireError> {
        let Some(mac) = &self.mac else {
            return Ok(());
        };
        // Decoding is bounded by what the scheme can produce, whatever size a peer sent.
        if signature.len() != SIGNATURE_HEX_LEN {
            return Err(WireError::SignatureLength(signature.len()));
        }
        let expected = hex::decode(signature).map_err(|_| WireError::BadSignature)?;
        let mut mac = mac.clone();
        for part in parts {
            mac.update(part);
        }
        // `verify_slice` compares in constant time.
        mac.verify_slice(&expected)
            .map_err(|_| WireError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_the_same_key_only() {
        let signer = Signer::new("hmac-sha256", "secret").unwrap();
        let parts: [&[u8]; 2] = [b"{\"a\":1}", b"{}"];
        let sig = signer.sign(&parts);
        assert_eq!(sig.len(), 64);
        assert!(signer.verify(&parts, sig.as_bytes()).is_ok());
        let other = Signer::new("hmac-sha256", "other").unwrap();
        assert!(matches!(
            other.verify(&parts, sig.as_bytes()),
            Err(WireError::BadSignature)
        ));
    }

    #[test]
    fn a_signature_of_the_wrong_length_is_refused_before_decoding() {
        let signer = Signer::new("hmac-sha256", "secret").unwrap();
        let parts: [&[u8]; 1] = [b"{}"];
        let huge = vec![b'0'; 1 << 20];
        assert!(matches!(
            signer.verify(&parts, &huge),
            Err(WireError::SignatureLength(n)) if n == 1 << 20
        ));
        assert!(matches!(
            signer.verify(&parts, b"00"),
            Err(WireError::SignatureLength(2))
        ));
    }

    #[test]
    fn a_known_vector_matches_python_hmac() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'key',b'ab',hashlib.sha256).hexdigest())"
        let signer = Signer::new("hmac-sha256", "key").unwrap();
        assert_eq!(
            signer.sign(&[b"a", b"b"]),
            "5c1c0c948cbef5ad7d191e46e5901fa0395f85f694fa4633f665a1a637017b65"
        );
    }

    #[test]
    fn altered_or_non_hex_signatures_are_refused() {
        let signer = Signer::new("hmac-sha256", "k").unwrap();
        let sig = signer.sign(&[b"x"]);
        assert!(signer.verify(&[b"y"], sig.as_bytes()).is_err());
        assert!(signer.verify(&[b"x"], b"zz").is_err());
        assert!(signer.verify(&[b"x"], b"").is_err());
    }

    #[test]
    fn an_empty_key_disables_signing() {
        let signer = Signer::new("hmac-sha256", "").unwrap();
        assert_eq!(signer.sign(&[b"x"]), "");
        assert!(signer.verify(&[b"x"], b"anything").is_ok());
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(matches!(
            Signer::new("hmac-md5", "k"),
            Err(WireError::UnsupportedScheme(_))
        ));
    }
}
