//! The ring context: degree and all RNS primes (data primes then special primes) with their
//! NTT tables. Polynomials refer to a subset of its primes by index.

use std::sync::Arc;

use crate::error::{Result, RingError};
use crate::modulus::Modulus;
use crate::ntt::{NttBackend, NttTable};
use crate::primes::is_ntt_friendly;

/// Degree `n` and the RNS primes of a ring `Z_q[X]/(X^n + 1)` family.
#[derive(Debug)]
pub struct RingContext {
    n: usize,
    log_n: u32,
    moduli: Vec<Modulus>,
    tables: Vec<NttTable>,
}

impl RingContext {
    /// Builds a context with the fastest available NTT kernel per prime.
    pub fn new(n: usize, primes: &[u64]) -> Result<Arc<Self>> {
        Self::with_backend(n, primes, None)
    }

    /// Builds a context, optionally forcing an NTT backend (`Some(Portable)` for tests).
    pub fn with_backend(n: usize, primes: &[u64], force: Option<NttBackend>) -> Result<Arc<Self>> {
        if !n.is_power_of_two() || !(16..=1 << 17).contains(&n) {
            return Err(RingError::InvalidDegree { n });
        }
        let mut moduli = Vec::with_capacity(primes.len());
        let mut tables = Vec::with_capacity(primes.len());
        for (i, &q) in primes.iter().enumerate() {
            if primes[..i].contains(&q) {
                return Err(RingError::DuplicatePrime { q });
            }
            if !is_ntt_friendly(q, n) {
                return Err(RingError::NotNttFriendly {
                    q,
                    two_n: 2 * n as u64,
                });
            }
            moduli.push(Modulus::new(q)?);
            tables.push(NttTable::with_backend(n, q, force)?);
        }
        Ok(Arc::new(Self {
            n,
            log_n: n.trailing_zeros(),
            moduli,
            tables,
        }))
    }

    /// Ring degree N.
    #[inline]
    pub fn n(&self) -> usize {
        self.n
    }

    /// log2(N).
    #[inline]
    pub fn log_n(&self) -> u32 {
        self.log_n
    }

    /// Number of primes in the context.
    #[inline]
    pub fn num_moduli(&self) -> usize {
        self.moduli.len()
    }

    /// All moduli.
    #[inline]
    pub fn moduli(&self) -> &[Modulus] {
        &self.moduli
    }

    /// Modulus at index `i`.
    pub fn modulus(&self, i: usize) -> Result<&Modulus> {
        self.moduli.get(i).ok_or(RingError::LimbOutOfRange {
            index: i,
            len: self.moduli.len(),
        })
    }

    /// NTT table of prime `i`.
    pub fn ntt_table(&self, i: usize) -> Result<&NttTable> {
        self.tables.get(i).ok_or(RingError::LimbOutOfRange {
            index: i,
            len: self.moduli.len(),
        })
    }

    /// Checks that all indices are in range and distinct.
    pub fn check_limbs(&self, limbs: &[usize]) -> Result<()> {
        for (k, &i) in limbs.iter().enumerate() {
            if i >= self.moduli.len() {
                return Err(RingError::LimbOutOfRange {
                    index: i,
                    len: self.moduli.len(),
                });
            }
            if limbs[..k].contains(&i) {
                return Err(RingError::DuplicatePrime {
                    q: self.moduli[i].value(),
                });
            }
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn modulus_unchecked(&self, i: usize) -> &Modulus {
        #[allow(
            clippy::indexing_slicing,
            reason = "limb indices are validated at poly creation"
        )]
        &self.moduli[i]
    }

    #[inline]
    pub(crate) fn table_unchecked(&self, i: usize) -> &NttTable {
        #[allow(
            clippy::indexing_slicing,
            reason = "limb indices are validated at poly creation"
        )]
        &self.tables[i]
    }
}
