//! The client's secret key at rest: a 32-byte seed drawn from the OS-seeded ChaCha20 CSPRNG,
//! from which the secret key is derived (the same ternary sampling, driven by ChaCha20
//! seeded with it), bound to one plan. Zeroized on drop, redacted in `Debug`, written with
//! file mode 0600. It never appears in a wire object: a server refuses any upload that starts
//! like a secret-key file ([`looks_like_secret`]).
//!
//! File format (version 1): magic `b"HNNS"`, version `u16`, reserved `u16` (0), the plan
//! fingerprint (32 bytes), the seed (32 bytes), checksum (first 8 bytes of SHA-256 of all
//! before).

use std::path::Path;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{NnError, Result};

/// Magic bytes opening a secret-key file.
pub const SECRET_MAGIC: [u8; 4] = *b"HNNS";
const VERSION: u16 = 1;
const LEN: usize = 4 + 2 + 2 + 32 + 32 + 8;

/// A secret seed (the secret key is derived from it).
pub struct SecretSeed(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SecretSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSeed(<redacted>)")
    }
}

impl SecretSeed {
    /// A fresh seed from the OS-seeded ChaCha20 CSPRNG.
    pub fn generate() -> Self {
        let mut s = Zeroizing::new([0u8; 32]);
        ChaCha20Rng::from_os_rng().fill_bytes(s.as_mut());
        Self(s)
    }

    /// A copy (zeroized on drop like the original).
    pub(crate) fn duplicate(&self) -> SecretSeed {
        SecretSeed(self.0.clone())
    }

    /// The CSPRNG the secret key is sampled with.
    pub(crate) fn rng(&self) -> ChaCha20Rng {
        ChaCha20Rng::from_seed(*self.0)
    }
}

/// Whether `bytes` start like a secret-key file (a server refuses such uploads).
pub fn looks_like_secret(bytes: &[u8]) -> bool {
    bytes.starts_with(&SECRET_MAGIC)
}

fn err(msg: impl Into<String>) -> NnError {
    NnError::Wire(format!("secret-key file: {}", msg.into()))
}

/// A secret seed bound to the plan it was made for.
#[derive(Debug)]
pub struct SecretKeyFile {
    /// Fingerprint of the plan.
    pub plan_fingerprint: String,
    /// The seed.
    pub seed: SecretSeed,
}

impl SecretKeyFile {
    /// The file's bytes (zeroized when dropped).
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::with_capacity(LEN));
        out.extend_from_slice(&SECRET_MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&super::wire::fingerprint_bytes(&self.plan_fingerprint)?);
        out.extend_from_slice(self.seed.0.as_ref());
        let sum = Sha256::digest(&out[..]);
        out.extend_from_slice(&sum[..8]);
        Ok(out)
    }

    /// Reads a secret-key file's bytes made for the plan with fingerprint `plan_fingerprint`.
    pub fn from_bytes(bytes: &[u8], plan_fingerprint: &str) -> Result<Self> {
        if bytes.len() != LEN {
            return Err(err(format!("{} bytes, expected {LEN}", bytes.len())));
        }
        if !looks_like_secret(bytes) {
            return Err(err("bad magic (not a henn secret-key file)"));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(err(format!("version {version}, this henn reads {VERSION}")));
        }
        let sum = Sha256::digest(&bytes[..LEN - 8]);
        if sum[..8] != bytes[LEN - 8..] {
            return Err(err("checksum mismatch (corrupted)"));
        }
        let fp: String = bytes[8..40].iter().map(|b| format!("{b:02x}")).collect();
        if fp != plan_fingerprint {
            return Err(NnError::PlanMismatch {
                what: "plan fingerprint of the secret key".into(),
                stored: fp,
                computed: plan_fingerprint.to_string(),
            });
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[40..72]);
        Ok(Self {
            plan_fingerprint: fp,
            seed: SecretSeed(seed),
        })
    }

    /// Writes the file with mode 0600 (owner read/write only), replacing an existing one.
    pub fn write(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let io = |source| NnError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        f.write_all(&self.to_bytes()?).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Reads a secret-key file for the plan with fingerprint `plan_fingerprint`.
    pub fn read(path: &Path, plan_fingerprint: &str) -> Result<Self> {
        let io = |source| NnError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() != LEN as u64 {
            return Err(err(format!(
                "{} is {} bytes, expected {LEN}",
                path.display(),
                meta.len()
            )));
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
        Self::from_bytes(&bytes, plan_fingerprint)
    }
}
