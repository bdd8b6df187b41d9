//! # henn-ckks
//!
//! RNS-CKKS approximate homomorphic encryption, secure by default:
//!
//! - [`params`]: literal -> checked, fingerprinted parameters with the
//!   HomomorphicEncryption.org security table (128-bit enforced unless explicitly waived);
//! - [`encoding`]: N/2 complex slots (canonical embedding, rotation group 5^k);
//! - [`keys`]: secret (zeroized, redacted), public, relinearization and Galois keys with
//!   hybrid key switching;
//! - [`encrypt`]: public- and secret-key encryption, decryption;
//! - [`eval`]: add, multiply, relinearize, rescale, rotate (also hoisted), conjugate;
//! - [`serial`]: versioned, fingerprinted, size-limited serialization.
//!
//! It knows nothing of neural networks.
//!
//! ```
//! use henn_ckks::prelude::*;
//! use rand::SeedableRng;
//! // toy parameters, insecure
//! let lit = CkksParamsLiteral {
//!     log_n: 10, q_bits: vec![50, 40], p_bits: vec![50], log_scale: 40.0, dnum: None,
//!     secret: SecretDistribution::Ternary,
//!     security: SecurityPolicy::InsecureAllowed { reason: "doc example".into() },
//! };
//! let params = CkksParams::new(lit).unwrap();
//! let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
//! let kg = KeyGenerator::new(&params);
//! let sk = kg.secret_key(&mut rng).unwrap();
//! let pk = kg.public_key(&sk, &mut rng).unwrap();
//! let enc = Encoder::new(&params);
//! let pt = enc.encode(&[1.5, -2.0], params.max_level(), params.default_scale()).unwrap();
//! let ct = Encryptor::new(&params).encrypt_pk(&pt, &pk, &mut rng).unwrap();
//! let out = enc.decode(&Decryptor::new(&params).decrypt(&ct, &sk).unwrap()).unwrap();
//! assert!((out[0] - 1.5).abs() < 1e-6 && (out[1] + 2.0).abs() < 1e-6);
//! ```

pub mod bootstrap;
pub mod ciphertext;
pub mod circuits;
pub mod encoding;
pub mod encrypt;
pub mod error;
pub mod eval;
pub mod keys;
pub mod keyswitch;
pub mod params;
pub mod serial;
pub mod types;

pub use ciphertext::{Ciphertext, Plaintext, SeededCiphertext};
pub use encoding::{Complex, Encoder};
pub use encrypt::{Decryptor, Encryptor};
pub use error::{CkksError, Result};
pub use eval::{Evaluator, ExtCiphertext};
pub use keys::{GaloisKey, GaloisKeys, KeyGenerator, KeySwitchKey, PublicKey, RelinKey, SecretKey};
pub use params::{CkksParams, CkksParamsLiteral, ParamsId, SecretDistribution, SecurityPolicy};
pub use types::{GaloisElement, Level, Scale};

/// Everything a typical user needs.
pub mod prelude {
    pub use crate::{
        Ciphertext, CkksError, CkksParams, CkksParamsLiteral, Complex, Decryptor, Encoder,
        Encryptor, Evaluator, GaloisElement, GaloisKeys, KeyGenerator, Level, Plaintext, PublicKey,
        RelinKey, Scale, SecretDistribution, SecretKey, SecurityPolicy,
    };
}
