//! Private keys: generated here, kept in zeroize-on-drop memory, never printed.

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};
use zeroize::{Zeroize, Zeroizing};

/// The kinds of key Halyard generates for its own CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default).
    EcP256,
    /// ECDSA on P-384 with SHA-384.
    EcP384,
    /// RSA, 3072 bits, PKCS#1 v1.5 with SHA-256 (roots only, when an auditor asks for RSA).
    Rsa3072,
}

impl KeyType {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// The name used on the command line and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Rsa3072 => "rsa-3072",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ec-p256" => Ok(KeyType::EcP256),
            "ec-p384" => Ok(KeyType::EcP384),
            "rsa-3072" => Ok(KeyType::Rsa3072),
            other => Err(KeyError::UnknownType(other.to_owned())),
        }
    }
}

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key type name that is not one of ours.
    #[error("unknown key type {0:?}: expected ec-p256, ec-p384 or rsa-3072")]
    UnknownType(String),
    /// Key generation failed.
    #[error("cannot generate a {key_type} key: {reason}")]
    Generate {
        /// The type asked for.
        key_type: KeyType,
        /// What failed.
        reason: String,
    },
    /// The bytes are not a PKCS#8 private key in PEM.
    #[error("not a PKCS#8 PEM private key: {0}")]
    NotPkcs8Pem(String),
    /// A PKCS#8 key of a type or size Halyard does not use.
    #[error("unsupported private key: {0}")]
    Unsupported(String),
}

/// A private key with its signer.
///
/// The PKCS#8 bytes are wiped when the key is dropped, and `Debug` prints only the key type.
pub struct PrivateKey {
    pair: KeyPair,
    key_type: KeyType,
}

impl PrivateKey {
    /// Generates a new key of the given type.
    pub fn generate(key_type: KeyType) -> Result<PrivateKey, KeyError> {
        let generate_err = |reason: String| KeyError::Generate { key_type, reason };
        let pair = match key_type {
            KeyType::EcP256 | KeyType::EcP384 => KeyPair::generate_for(key_type.algorithm())
                .map_err(|e| generate_err(e.to_string()))?,
            // ring signs with RSA but cannot generate RSA keys.
            KeyType::Rsa3072 => {
                use rsa::pkcs8::EncodePrivateKey;
                let mut rng = rsa::rand_core::OsRng;
                let key = rsa::RsaPrivateKey::new(&mut rng, 3072)
                    .map_err(|e| generate_err(e.to_string()))?;
                let der = key
                    .to_pkcs8_der()
                    .map_err(|e| generate_err(e.to_string()))?;
                let der = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes());
                KeyPair::from_pkcs8_der_and_sign_algo(&der, key_type.algorithm())
                    .map_err(|e| generate_err(e.to_string()))?
            }
        };
        Ok(PrivateKey { pair, key_type })
    }

    /// Reads a PKCS#8 PEM key (as written by [`PrivateKey::to_pkcs8_pem`]).
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<PrivateKey, KeyError> {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|e| KeyError::NotPkcs8Pem(e.to_string()))?;
        let pair = KeyPair::try_from(&der).map_err(|e| KeyError::Unsupported(e.to_string()))?;
        let key_type = if pair.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
            KeyType::EcP256
        } else if pair.algorithm() == &rcgen::PKCS_ECDSA_P384_SHA384 {
            KeyType::EcP384
        } else if pair.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            KeyType::Rsa3072
        } else {
            return Err(KeyError::Unsupported(format!("{:?}", pair.algorithm())));
        };
        Ok(PrivateKey { pair, key_type })
    }

    /// The key as PKCS#8 PEM, in memory that is wiped when dropped.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.pair.serialize_pem())
    }

    /// The key as PKCS#8 DER, in memory that is wiped when dropped.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.pair.serialize_der())
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    pub fn public_key_spki(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.pair.zeroize();
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl PublicKeyData for PrivateKey {
    fn der_bytes(&self) -> &[u8] {
        self.pair.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.pair.algorithm()
    }
}

impl SigningKey for PrivateKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.pair.sign(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_each_type() {
        for key_type in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa3072] {
            let key = PrivateKey::generate(key_type).unwrap();
            let again = PrivateKey::from_pkcs8_pem(key.to_pkcs8_pem().as_bytes()).unwrap();
            assert_eq!(again.key_type(), key_type);
            assert_eq!(again.public_key_spki(), key.public_key_spki());
        }
    }

    #[test]
    fn debug_prints_no_secret() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let debug = format!("{key:?}");
        assert_eq!(debug, "PrivateKey { key_type: EcP256, .. }");
        let pem = key.to_pkcs8_pem();
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!debug.contains(&body));
    }

    #[test]
    fn refuses_what_is_not_a_key() {
        assert!(matches!(
            PrivateKey::from_pkcs8_pem(b"hello"),
            Err(KeyError::NotPkcs8Pem(_))
        ));
        let cert_like = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pkcs8_pem(cert_like),
            Err(KeyError::Unsupported(_))
        ));
        assert!(matches!(
            "dsa".parse::<KeyType>(),
            Err(KeyError::UnknownType(_))
        ));
    }
}
