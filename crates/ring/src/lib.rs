//! # henn-ring
//!
//! The arithmetic bottom of henn, and the only crate with hot loops:
//!
//! - [`modulus`]: word-size modular arithmetic (Barrett, Shoup, lazy Harvey variants);
//! - [`primes`]: NTT-friendly prime generation close to a target size;
//! - [`ntt`]: negacyclic NTT per prime, portable and AVX-512 IFMA (chosen at run time);
//! - [`context`], [`poly`]: RNS polynomials with the representation in the type
//!   (`Poly<Coeff>` / `Poly<Ntt>`), automorphisms, rescaling by the last prime;
//! - [`rns`]: fast basis conversion and ModDown for hybrid key switching;
//! - [`sample`]: uniform, ternary, sparse ternary and discrete Gaussian samplers taking the
//!   caller's `CryptoRng`.
//!
//! It knows nothing about CKKS levels, scales or keys.

pub mod context;
pub mod error;
pub mod modulus;
pub mod ntt;
pub mod poly;
pub mod primes;
pub mod rns;
pub mod sample;
pub mod simd;

pub use context::RingContext;
pub use error::{Result, RingError};
pub use modulus::{Modulus, ShoupConst};
pub use ntt::{NttBackend, NttTable};
pub use poly::{AutomorphismPermutation, Coeff, Ntt, Poly, Repr};
pub use rns::{BasisConverter, ModDown};
