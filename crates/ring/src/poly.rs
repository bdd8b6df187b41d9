//! RNS polynomials whose representation (coefficients or NTT evaluations) is part of the type.
//!
//! A [`Poly`] holds one limb of `n` residues per prime; the primes are a subset of a
//! [`RingContext`], named by index. Limb-wise work runs on rayon (one task per limb), so
//! results are identical for any thread count.

use std::marker::PhantomData;
use std::sync::Arc;

use rayon::prelude::*;
use zeroize::Zeroize;

use crate::context::RingContext;
use crate::error::{Result, RingError};
use crate::modulus::{Modulus, ShoupConst};
use crate::simd;

mod sealed {
    pub trait Sealed {}
}

/// Marker for a polynomial representation.
pub trait Repr: sealed::Sealed + Send + Sync + Copy + std::fmt::Debug + 'static {
    /// Human-readable name.
    const NAME: &'static str;
}

/// Coefficient representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coeff;
/// NTT (evaluation) representation, bit-reversed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ntt;
impl sealed::Sealed for Coeff {}
impl sealed::Sealed for Ntt {}
impl Repr for Coeff {
    const NAME: &'static str = "coefficient";
}
impl Repr for Ntt {
    const NAME: &'static str = "NTT";
}

/// Minimum number of limbs before limb-wise work is split across threads.
const PAR_MIN_LIMBS: usize = 2;

/// An RNS polynomial in representation `R`.
pub struct Poly<R: Repr> {
    ctx: Arc<RingContext>,
    limbs: Vec<usize>,
    data: Vec<u64>,
    _repr: PhantomData<R>,
}

impl<R: Repr> Clone for Poly<R> {
    fn clone(&self) -> Self {
        Self {
            ctx: self.ctx.clone(),
            limbs: self.limbs.clone(),
            data: self.data.clone(),
            _repr: PhantomData,
        }
    }
}

impl<R: Repr> std::fmt::Debug for Poly<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poly")
            .field("repr", &R::NAME)
            .field("n", &self.ctx.n())
            .field("limbs", &self.limbs)
            .finish_non_exhaustive()
    }
}

impl<R: Repr> PartialEq for Poly<R> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ctx, &other.ctx) && self.limbs == other.limbs && self.data == other.data
    }
}
impl<R: Repr> Eq for Poly<R> {}

impl<R: Repr> Zeroize for Poly<R> {
    fn zeroize(&mut self) {
        self.data.zeroize();
    }
}

/// Coefficients per block of [`Poly::scalar_matrix_mul`] (4 KiB of `u64` per slice).
const SMM_BLOCK: usize = 512;

/// The outputs' coefficients as parallel tasks: task `j * blocks + b` holds block `b`
/// (`block` coefficients) of limb `j` of every output, in output order.
fn block_tasks<R: Repr>(
    outs: &mut [Poly<R>],
    limbs: usize,
    n: usize,
    block: usize,
) -> Vec<Vec<&mut [u64]>> {
    let nb = n.div_ceil(block);
    let mut tasks: Vec<Vec<&mut [u64]>> = (0..limbs * nb)
        .map(|_| Vec::with_capacity(outs.len()))
        .collect();
    for out in outs {
        for (j, limb) in out.data.chunks_mut(n).enumerate() {
            for (b, blk) in limb.chunks_mut(block).enumerate() {
                if let Some(t) = tasks.get_mut(j * nb + b) {
                    t.push(blk);
                }
            }
        }
    }
    tasks
}
/// Coefficients per block of [`Poly::plain_matrix_mul_parts`] (16 KiB of `u64` per slice):
/// each plaintext's block is a longer contiguous run for the prefetcher, while the rotated
/// inputs' blocks of a layer still fit in the L2/L3 caches (measured on the CIFAR CNNs:
/// 512 -> 2048 made their products 1.3-1.5x faster).
const PMM_BLOCK: usize = 2048;

/// Inputs per tile of [`Poly::scalar_matrix_mul`]: a tile of input blocks (512 KiB) and the
/// output blocks stay in L2 while every output consumes the tile.
const SMM_TILE: usize = 128;

impl<R: Repr> Poly<R> {
    /// A matrix of scalars times a vector of polynomials: `out[o] = sum_k w[o][k] * xs[k]`
    /// with `w` given per limb as Shoup constants at `w[(o * K + k) * L + j]` (`K` inputs,
    /// `L` limbs). A zero constant is skipped. Tiled over coefficient blocks and inputs so
    /// that each input block is read from memory once and reused from cache by all outputs
    /// (a loop of `mul_scalar_add_assign` streams every input once per output). Parallel
    /// over (limb, block) tasks. All inputs share one basis.
    pub fn scalar_matrix_mul(xs: &[&Self], w: &[ShoupConst], n_out: usize) -> Result<Vec<Self>> {
        let first = xs.first().ok_or(RingError::LengthMismatch {
            expected: 1,
            got: 0,
        })?;
        for x in xs {
            first.check_same_basis(x)?;
        }
        let (k, l, n) = (xs.len(), first.limbs.len(), first.n());
        if w.len() != n_out * k * l {
            return Err(RingError::LengthMismatch {
                expected: n_out * k * l,
                got: w.len(),
            });
        }
        let mut outs: Vec<Self> = (0..n_out)
            .map(|_| Self::zero(&first.ctx, &first.limbs))
            .collect::<Result<_>>()?;
        let nb = n.div_ceil(SMM_BLOCK);
        let tasks = block_tasks(&mut outs, l, n, SMM_BLOCK);
        let ctx = &first.ctx;
        let limbs = &first.limbs;
        // per limb, weights in output-major order for the kernel
        let wl: Vec<Vec<ShoupConst>> = (0..l)
            .map(|j| (0..n_out * k).map(|i| w[i * l + j]).collect())
            .collect();
        tasks.into_par_iter().enumerate().for_each(|(t, mut accs)| {
            let (j, b) = (t / nb, t % nb);
            let m = ctx.modulus_unchecked(limbs[j]);
            let lo = j * n + b * SMM_BLOCK;
            let hi = (lo + SMM_BLOCK).min((j + 1) * n);
            let blocks: Vec<&[u64]> = xs.iter().map(|x| &x.data[lo..hi]).collect();
            for k0 in (0..k).step_by(SMM_TILE) {
                let k1 = (k0 + SMM_TILE).min(k);
                let wt: Vec<ShoupConst> = (0..n_out)
                    .flat_map(|o| wl[j][o * k + k0..o * k + k1].iter().copied())
                    .collect();
                simd::matrix_mul_add_assign(&mut accs, &blocks[k0..k1], &wt, m);
            }
        });
        Ok(outs)
    }
}

impl<R: Repr> Poly<R> {
    /// The zero polynomial over the given primes of `ctx`.
    pub fn zero(ctx: &Arc<RingContext>, limbs: &[usize]) -> Result<Self> {
        ctx.check_limbs(limbs)?;
        Ok(Self {
            ctx: ctx.clone(),
            limbs: limbs.to_vec(),
            data: vec![0; ctx.n() * limbs.len()],
            _repr: PhantomData,
        })
    }

    /// Builds a polynomial from raw residues (limb-major, each limb `n` values reduced mod
    /// its prime). Values are checked.
    pub fn from_raw(ctx: &Arc<RingContext>, limbs: &[usize], data: Vec<u64>) -> Result<Self> {
        ctx.check_limbs(limbs)?;
        let n = ctx.n();
        if data.len() != n * limbs.len() {
            return Err(RingError::LengthMismatch {
                expected: n * limbs.len(),
                got: data.len(),
            });
        }
        for (chunk, &i) in data.chunks(n).zip(limbs) {
            let q = ctx.modulus_unchecked(i).value();
            if let Some(&bad) = chunk.iter().find(|&&x| x >= q) {
                return Err(RingError::ModulusOutOfRange { q: bad });
            }
        }
        Ok(Self {
            ctx: ctx.clone(),
            limbs: limbs.to_vec(),
            data,
            _repr: PhantomData,
        })
    }

    /// The ring context.
    #[inline]
    pub fn context(&self) -> &Arc<RingContext> {
        &self.ctx
    }

    /// Ring degree.
    #[inline]
    pub fn n(&self) -> usize {
        self.ctx.n()
    }

    /// Indices (into the context) of the primes of this polynomial.
    #[inline]
    pub fn limbs(&self) -> &[usize] {
        &self.limbs
    }

    /// Number of limbs.
    #[inline]
    pub fn num_limbs(&self) -> usize {
        self.limbs.len()
    }

    /// All residues, limb-major.
    #[inline]
    pub fn data(&self) -> &[u64] {
        &self.data
    }

    /// Mutable residues, limb-major. Callers must keep each value below its prime.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u64] {
        &mut self.data
    }

    /// Residues of limb `k` (position in this polynomial, not the context index).
    pub fn limb(&self, k: usize) -> Result<&[u64]> {
        let n = self.n();
        self.data
            .get(k * n..(k + 1) * n)
            .ok_or(RingError::LimbOutOfRange {
                index: k,
                len: self.limbs.len(),
            })
    }

    /// Mutable residues of limb `k`.
    pub fn limb_mut(&mut self, k: usize) -> Result<&mut [u64]> {
        let n = self.n();
        let len = self.limbs.len();
        self.data
            .get_mut(k * n..(k + 1) * n)
            .ok_or(RingError::LimbOutOfRange { index: k, len })
    }

    /// Iterator over `(modulus, residues)` per limb.
    pub fn iter_limbs(&self) -> impl Iterator<Item = (&Modulus, &[u64])> {
        let ctx = &self.ctx;
        self.limbs
            .iter()
            .map(|&i| ctx.modulus_unchecked(i))
            .zip(self.data.chunks(ctx.n()))
    }

    /// Checks that `other` has the same context and primes.
    pub fn check_same_basis<S: Repr>(&self, other: &Poly<S>) -> Result<()> {
        if !Arc::ptr_eq(&self.ctx, &other.ctx) || self.limbs != other.limbs {
            return Err(RingError::BasisMismatch {
                lhs: self.limbs.clone(),
                rhs: other.limbs.clone(),
            });
        }
        Ok(())
    }

    /// Applies `f(modulus, limb)` to every limb, in parallel.
    pub fn par_for_each_limb<F>(&mut self, f: F)
    where
        F: Fn(&Modulus, &mut [u64]) + Sync + Send,
    {
        let ctx = &self.ctx;
        let n = ctx.n();
        if self.limbs.len() >= PAR_MIN_LIMBS {
            self.data
                .par_chunks_mut(n)
                .zip(self.limbs.par_iter())
                .for_each(|(chunk, &i)| f(ctx.modulus_unchecked(i), chunk));
        } else {
            for (chunk, &i) in self.data.chunks_mut(n).zip(&self.limbs) {
                f(ctx.modulus_unchecked(i), chunk);
            }
        }
    }

    /// Applies `f(modulus, self_limb, other_limb)` limb-wise, in parallel.
    fn par_zip_limbs<S: Repr, F>(&mut self, other: &Poly<S>, f: F) -> Result<()>
    where
        F: Fn(&Modulus, &mut [u64], &[u64]) + Sync + Send,
    {
        self.check_same_basis(other)?;
        let ctx = &self.ctx;
        let n = ctx.n();
        self.data
            .par_chunks_mut(n)
            .zip(other.data.par_chunks(n))
            .zip(self.limbs.par_iter())
            .with_min_len(if self.limbs.len() >= PAR_MIN_LIMBS {
                1
            } else {
                usize::MAX
            })
            .for_each(|((a, b), &i)| f(ctx.modulus_unchecked(i), a, b));
        Ok(())
    }

    /// `self += other`.
    pub fn add_assign(&mut self, other: &Self) -> Result<()> {
        self.par_zip_limbs(other, |m, a, b| simd::add_assign(a, b, m))
    }

    /// `self -= other`.
    pub fn sub_assign(&mut self, other: &Self) -> Result<()> {
        self.par_zip_limbs(other, |m, a, b| simd::sub_assign(a, b, m))
    }

    /// `self = other - self`.
    pub fn rsub_assign(&mut self, other: &Self) -> Result<()> {
        self.par_zip_limbs(other, |m, a, b| {
            for (x, &y) in a.iter_mut().zip(b) {
                *x = m.sub(y, *x);
            }
        })
    }

    /// `self + other` as a new polynomial.
    pub fn add(&self, other: &Self) -> Result<Self> {
        let mut r = self.clone();
        r.add_assign(other)?;
        Ok(r)
    }

    /// `self - other` as a new polynomial.
    pub fn sub(&self, other: &Self) -> Result<Self> {
        let mut r = self.clone();
        r.sub_assign(other)?;
        Ok(r)
    }

    /// `self = -self`.
    pub fn neg_assign(&mut self) {
        self.par_for_each_limb(|m, a| {
            for x in a.iter_mut() {
                *x = m.neg(*x);
            }
        });
    }

    /// Multiplies limb `k` by `scalars[k]` (one constant per limb, already reduced or not).
    /// In either representation this multiplies the polynomial by the integer whose
    /// residues are `scalars`.
    pub fn mul_scalar_assign(&mut self, scalars: &[u64]) -> Result<()> {
        if scalars.len() != self.limbs.len() {
            return Err(RingError::LengthMismatch {
                expected: self.limbs.len(),
                got: scalars.len(),
            });
        }
        let ctx = &self.ctx;
        let n = ctx.n();
        let consts: Vec<ShoupConst> = self
            .limbs
            .iter()
            .zip(scalars)
            .map(|(&i, &s)| ctx.modulus_unchecked(i).shoup(s))
            .collect();
        self.data
            .par_chunks_mut(n)
            .zip(self.limbs.par_iter())
            .zip(consts.par_iter())
            .for_each(|((a, &i), &w)| simd::mul_shoup_assign(a, w, ctx.modulus_unchecked(i)));
        Ok(())
    }

    /// `self += other * s` where `s` is the integer with residues `scalars` (one per limb):
    /// a scalar multiply-accumulate without a temporary polynomial.
    pub fn mul_scalar_add_assign(&mut self, other: &Self, scalars: &[u64]) -> Result<()> {
        self.check_same_basis(other)?;
        if scalars.len() != self.limbs.len() {
            return Err(RingError::LengthMismatch {
                expected: self.limbs.len(),
                got: scalars.len(),
            });
        }
        let ctx = &self.ctx;
        let n = ctx.n();
        self.data
            .par_chunks_mut(n)
            .zip(other.data.par_chunks(n))
            .zip(self.limbs.par_iter().zip(scalars.par_iter()))
            .with_min_len(if self.limbs.len() >= PAR_MIN_LIMBS {
                1
            } else {
                usize::MAX
            })
            .for_each(|((a, b), (&i, &sc))| {
                let m = ctx.modulus_unchecked(i);
                simd::mul_shoup_add_assign(a, b, m.shoup(sc), m);
            });
        Ok(())
    }

    /// Drops limbs from the end until `keep` remain.
    pub fn truncate_limbs(&mut self, keep: usize) -> Result<()> {
        if keep > self.limbs.len() {
            return Err(RingError::NotEnoughLimbs {
                need: keep,
                have: self.limbs.len(),
            });
        }
        self.limbs.truncate(keep);
        self.data.truncate(keep * self.ctx.n());
        Ok(())
    }

    /// A copy restricted to the given context primes (all must be present in `self`).
    pub fn select_limbs(&self, limbs: &[usize]) -> Result<Self> {
        let n = self.n();
        let mut data = Vec::with_capacity(n * limbs.len());
        for &i in limbs {
            let pos = self.limbs.iter().position(|&j| j == i).ok_or_else(|| {
                RingError::BasisMismatch {
                    lhs: self.limbs.clone(),
                    rhs: limbs.to_vec(),
                }
            })?;
            data.extend_from_slice(self.limb(pos)?);
        }
        Ok(Self {
            ctx: self.ctx.clone(),
            limbs: limbs.to_vec(),
            data,
            _repr: PhantomData,
        })
    }

    /// Appends the limbs of `other` (which must not share primes with `self`).
    pub fn concat_limbs(mut self, other: &Self) -> Result<Self> {
        if !Arc::ptr_eq(&self.ctx, &other.ctx) {
            return Err(RingError::BasisMismatch {
                lhs: self.limbs.clone(),
                rhs: other.limbs.clone(),
            });
        }
        self.limbs.extend_from_slice(&other.limbs);
        self.ctx.check_limbs(&self.limbs)?;
        self.data.extend_from_slice(&other.data);
        Ok(self)
    }

    /// Reinterprets the representation. Only for crate-internal transforms.
    fn cast<S: Repr>(self) -> Poly<S> {
        Poly {
            ctx: self.ctx,
            limbs: self.limbs,
            data: self.data,
            _repr: PhantomData,
        }
    }
}

impl Poly<Coeff> {
    /// Builds a coefficient-form polynomial from signed integer coefficients (length `n`).
    pub fn from_signed(ctx: &Arc<RingContext>, limbs: &[usize], coeffs: &[i64]) -> Result<Self> {
        let mut p = Self::zero(ctx, limbs)?;
        if coeffs.len() != ctx.n() {
            return Err(RingError::LengthMismatch {
                expected: ctx.n(),
                got: coeffs.len(),
            });
        }
        p.par_for_each_limb(|m, a| {
            for (x, &c) in a.iter_mut().zip(coeffs) {
                *x = m.reduce_i64(c);
            }
        });
        Ok(p)
    }

    /// Builds a coefficient-form polynomial from signed 128-bit coefficients (length `n`).
    pub fn from_signed_i128(
        ctx: &Arc<RingContext>,
        limbs: &[usize],
        coeffs: &[i128],
    ) -> Result<Self> {
        let mut p = Self::zero(ctx, limbs)?;
        if coeffs.len() != ctx.n() {
            return Err(RingError::LengthMismatch {
                expected: ctx.n(),
                got: coeffs.len(),
            });
        }
        p.par_for_each_limb(|m, a| {
            for (x, &c) in a.iter_mut().zip(coeffs) {
                *x = m.reduce_i128(c);
            }
        });
        Ok(p)
    }

    /// Forward NTT of every limb.
    pub fn ntt(mut self) -> Poly<Ntt> {
        let ctx = self.ctx.clone();
        let n = ctx.n();
        self.data
            .par_chunks_mut(n)
            .zip(self.limbs.par_iter())
            .for_each(|(a, &i)| ctx.table_unchecked(i).forward(a));
        self.cast()
    }

    /// Negacyclic automorphism `X -> X^g` (g odd) in coefficient form.
    pub fn automorphism(&self, galois: u64) -> Result<Self> {
        let n = self.n();
        let two_n = 2 * n as u64;
        if galois.is_multiple_of(2) {
            return Err(RingError::InvalidGaloisElement {
                element: galois,
                two_n,
            });
        }
        let g = galois % two_n;
        let mut out = Self::zero(&self.ctx, &self.limbs)?;
        let mask = two_n - 1;
        let ctx = &self.ctx;
        out.data
            .par_chunks_mut(n)
            .zip(self.data.par_chunks(n))
            .zip(self.limbs.par_iter())
            .for_each(|((dst, src), &i)| {
                let m = ctx.modulus_unchecked(i);
                let mut idx = 0u64;
                #[allow(clippy::indexing_slicing, reason = "target index reduced below n")]
                for &x in src {
                    let j = (idx & mask) as usize;
                    if j < n {
                        dst[j] = x
                    } else {
                        dst[j - n] = m.neg(x)
                    }
                    idx += g;
                }
            });
        Ok(out)
    }
}

impl Poly<Ntt> {
    /// Inverse NTT of every limb.
    pub fn intt(mut self) -> Poly<Coeff> {
        let ctx = self.ctx.clone();
        let n = ctx.n();
        self.data
            .par_chunks_mut(n)
            .zip(self.limbs.par_iter())
            .for_each(|(a, &i)| ctx.table_unchecked(i).inverse(a));
        self.cast()
    }

    /// `self *= other` (pointwise, i.e. negacyclic polynomial product).
    pub fn mul_assign(&mut self, other: &Self) -> Result<()> {
        self.par_zip_limbs(other, |m, a, b| simd::mul_assign(a, b, m))
    }

    /// `self *= other` where `other`'s primes start with `self`'s (e.g. a plaintext at a
    /// higher level than the ciphertext): the extra limbs of `other` are ignored, no copy.
    pub fn mul_assign_prefix(&mut self, other: &Self) -> Result<()> {
        let k = self.limbs.len();
        if !Arc::ptr_eq(&self.ctx, &other.ctx) || other.limbs.get(..k) != Some(&self.limbs[..]) {
            return Err(RingError::BasisMismatch {
                lhs: self.limbs.clone(),
                rhs: other.limbs.clone(),
            });
        }
        let ctx = &self.ctx;
        let n = ctx.n();
        self.data
            .par_chunks_mut(n)
            .zip(other.data[..k * n].par_chunks(n))
            .zip(self.limbs.par_iter())
            .for_each(|((a, b), &i)| simd::mul_assign(a, b, ctx.modulus_unchecked(i)));
        Ok(())
    }

    /// `self * other` as a new polynomial.
    pub fn mul(&self, other: &Self) -> Result<Self> {
        let mut r = self.clone();
        r.mul_assign(other)?;
        Ok(r)
    }

    /// `self += a * b`.
    pub fn mul_add_assign(&mut self, a: &Self, b: &Self) -> Result<()> {
        a.check_same_basis(b)?;
        self.check_same_basis(a)?;
        let ctx = &self.ctx;
        let n = ctx.n();
        self.data
            .par_chunks_mut(n)
            .zip(a.data.par_chunks(n))
            .zip(b.data.par_chunks(n))
            .zip(self.limbs.par_iter())
            .for_each(|(((d, x), y), &i)| simd::mul_add_assign(d, x, y, ctx.modulus_unchecked(i)));
        Ok(())
    }

    /// `out[o] = sum over terms (o, i, p) of xs[i] * p`: products of inputs with plaintexts,
    /// summed per output, every `p` over a superset of the inputs' primes (an output without
    /// terms is zero). [`Poly::plain_matrix_mul_parts`] with one part per input.
    pub fn plain_matrix_mul(
        xs: &[&Self],
        terms: &[(usize, usize, &Self)],
        n_out: usize,
    ) -> Result<Vec<Self>> {
        let parts: Vec<[&Self; 1]> = xs.iter().map(|&x| [x]).collect();
        let refs: Vec<&[&Self]> = parts.iter().map(|p| p.as_slice()).collect();
        Ok(Self::plain_matrix_mul_parts(&refs, terms, n_out)?
            .into_iter()
            .flatten()
            .collect())
    }

    /// `out[o][p] = sum over terms (o, i, pt) of xs[i][p] * pt` for inputs of several parts
    /// (a ciphertext's polynomials, every input with as many), every `pt` over a superset of
    /// the inputs' primes (an output without terms is zero). Computed in blocks of
    /// [`PMM_BLOCK`] coefficients per limb (parallel tasks): per output, its products are
    /// summed unreduced in cache-resident accumulators and reduced once per chunk of terms
    /// ([`simd::dot_products_add_assign`]); each plaintext block is read from memory once
    /// for all the parts, and the inputs' blocks stay in the cache for all the outputs that
    /// use them.
    pub fn plain_matrix_mul_parts(
        xs: &[&[&Self]],
        terms: &[(usize, usize, &Self)],
        n_out: usize,
    ) -> Result<Vec<Vec<Self>>> {
        let no_input = RingError::LengthMismatch {
            expected: 1,
            got: 0,
        };
        let first = *xs.first().and_then(|x| x.first()).ok_or(no_input)?;
        let n_parts = xs[0].len();
        for x in xs {
            if x.len() != n_parts {
                return Err(RingError::LengthMismatch {
                    expected: n_parts,
                    got: x.len(),
                });
            }
            for part in x.iter() {
                first.check_same_basis(part)?;
            }
        }
        let (l, n) = (first.limbs.len(), first.n());
        // per output, its terms as (input, plaintext, limb positions of the plaintext
        // matching the inputs' limbs)
        type Term<'a, P> = (&'a [&'a P], &'a P, Vec<usize>);
        let mut by_out: Vec<Vec<Term<'_, Self>>> = vec![Vec::new(); n_out];
        for &(o, i, p) in terms {
            let (Some(list), Some(&x)) = (by_out.get_mut(o), xs.get(i)) else {
                return Err(RingError::LengthMismatch {
                    expected: n_out.min(xs.len()),
                    got: o.max(i),
                });
            };
            if !Arc::ptr_eq(&first.ctx, &p.ctx) {
                return Err(RingError::BasisMismatch {
                    lhs: first.limbs.clone(),
                    rhs: p.limbs.clone(),
                });
            }
            let pos = first
                .limbs
                .iter()
                .map(|&li| {
                    p.limbs
                        .iter()
                        .position(|&j| j == li)
                        .ok_or_else(|| RingError::BasisMismatch {
                            lhs: first.limbs.clone(),
                            rhs: p.limbs.clone(),
                        })
                })
                .collect::<Result<Vec<usize>>>()?;
            list.push((x, p, pos));
        }
        // outputs in (output, part) order
        let mut outs: Vec<Self> = (0..n_out * n_parts)
            .map(|_| Self::zero(&first.ctx, &first.limbs))
            .collect::<Result<_>>()?;
        let nb = n.div_ceil(PMM_BLOCK);
        let tasks = block_tasks(&mut outs, l, n, PMM_BLOCK);
        let ctx = &first.ctx;
        let limbs = &first.limbs;
        tasks.into_par_iter().enumerate().for_each(|(t, mut accs)| {
            let (j, b) = (t / nb, t % nb);
            let m = ctx.modulus_unchecked(limbs[j]);
            let lo = b * PMM_BLOCK;
            let hi = (lo + PMM_BLOCK).min(n);
            let mut y_blocks: Vec<&[u64]> = Vec::new();
            let mut x_blocks: Vec<Vec<&[u64]>> = vec![Vec::new(); n_parts];
            for (acc, list) in accs.chunks_mut(n_parts).zip(&by_out) {
                y_blocks.clear();
                x_blocks.iter_mut().for_each(Vec::clear);
                for (x, p, pos) in list {
                    y_blocks.push(&p.data[pos[j] * n + lo..pos[j] * n + hi]);
                    for (blocks, part) in x_blocks.iter_mut().zip(x.iter()) {
                        blocks.push(&part.data[j * n + lo..j * n + hi]);
                    }
                }
                let xr: Vec<&[&[u64]]> = x_blocks.iter().map(|v| v.as_slice()).collect();
                simd::dot_products_add_assign(acc, &y_blocks, &xr, m);
            }
        });
        let mut it = outs.into_iter();
        Ok((0..n_out)
            .map(|_| it.by_ref().take(n_parts).collect())
            .collect())
    }

    /// `self += a * b` where `a` has the basis of `self` and `b` is over a superset of its
    /// primes (in any order): the matching limbs of `b` are used. This lets key-switching
    /// keys stored over all primes be applied at any level without copying.
    pub fn mul_add_assign_subset(&mut self, a: &Self, b: &Self) -> Result<()> {
        self.check_same_basis(a)?;
        if !Arc::ptr_eq(&self.ctx, &b.ctx) {
            return Err(RingError::BasisMismatch {
                lhs: self.limbs.clone(),
                rhs: b.limbs.clone(),
            });
        }
        let n = self.n();
        let mut b_limbs = Vec::with_capacity(self.limbs.len());
        for &i in &self.limbs {
            let pos =
                b.limbs
                    .iter()
                    .position(|&j| j == i)
                    .ok_or_else(|| RingError::BasisMismatch {
                        lhs: self.limbs.clone(),
                        rhs: b.limbs.clone(),
                    })?;
            b_limbs.push(b.limb(pos)?);
        }
        let ctx = &self.ctx;
        self.data
            .par_chunks_mut(n)
            .zip(a.data.par_chunks(n))
            .zip(b_limbs.par_iter())
            .zip(self.limbs.par_iter())
            .for_each(|(((d, x), y), &i)| simd::mul_add_assign(d, x, y, ctx.modulus_unchecked(i)));
        Ok(())
    }

    /// Adds the integer whose residues are `scalars` (one per limb) to every evaluation,
    /// i.e. adds a constant polynomial.
    pub fn add_scalar_assign(&mut self, scalars: &[u64]) -> Result<()> {
        if scalars.len() != self.limbs.len() {
            return Err(RingError::LengthMismatch {
                expected: self.limbs.len(),
                got: scalars.len(),
            });
        }
        let ctx = &self.ctx;
        let n = ctx.n();
        self.data
            .par_chunks_mut(n)
            .zip(self.limbs.par_iter())
            .zip(scalars.par_iter())
            .for_each(|((a, &i), &s)| {
                let m = ctx.modulus_unchecked(i);
                let s = m.reduce(s);
                for x in a.iter_mut() {
                    *x = m.add(*x, s);
                }
            });
        Ok(())
    }

    /// Applies the automorphism `X -> X^g` in the NTT domain with a precomputed permutation.
    pub fn automorphism(&self, perm: &AutomorphismPermutation) -> Result<Self> {
        let n = self.n();
        if perm.map.len() != n {
            return Err(RingError::LengthMismatch {
                expected: n,
                got: perm.map.len(),
            });
        }
        // gathered straight into a fresh buffer: no zero fill of memory about to be written
        let mut data = Vec::with_capacity(self.data.len());
        for src in self.data.chunks(n) {
            #[allow(
                clippy::indexing_slicing,
                reason = "permutation entries are < n by construction"
            )]
            data.extend(perm.map.iter().map(|&j| src[j as usize]));
        }
        Ok(Self {
            ctx: self.ctx.clone(),
            limbs: self.limbs.clone(),
            data,
            _repr: PhantomData,
        })
    }

    /// Divides by the last prime `q_last` with rounding and drops it (CKKS rescale):
    /// `self <- round(self / q_last)` over the remaining primes.
    pub fn divide_round_by_last_assign(&mut self) -> Result<()> {
        let k = self.limbs.len();
        if k < 2 {
            return Err(RingError::NotEnoughLimbs { need: 2, have: k });
        }
        let n = self.n();
        let ctx = self.ctx.clone();
        let last_idx = self.limbs[k - 1];
        let last_m = *ctx.modulus_unchecked(last_idx);
        let mut last = self.data.split_off((k - 1) * n);
        self.limbs.truncate(k - 1);
        ctx.table_unchecked(last_idx).inverse(&mut last);
        // round(a / q) = (a + h - ((a + h) mod q)) / q with h = floor(q/2).
        let half = last_m.value() >> 1;
        for x in last.iter_mut() {
            *x = last_m.add(*x, half);
        }
        let last = &last;
        self.data
            .par_chunks_mut(n)
            .zip(self.limbs.par_iter())
            .for_each_init(
                || vec![0u64; n],
                |tmp, (a, &i)| {
                    let m = ctx.modulus_unchecked(i);
                    let half_i = m.reduce(half);
                    if last_m.value() <= 2 * m.value() {
                        simd::reduce_once_sub(tmp, last, half_i, m);
                    } else {
                        for (t, &x) in tmp.iter_mut().zip(last) {
                            *t = m.sub(m.reduce(x), half_i);
                        }
                    }
                    ctx.table_unchecked(i).forward(tmp);
                    // q_last^{-1} mod q_i exists: distinct primes.
                    let inv = m.shoup(m.inv(last_m.value()).unwrap_or(0));
                    simd::sub_mul_shoup_assign(a, tmp, inv, m);
                },
            );
        Ok(())
    }
}

/// Precomputed NTT-domain permutation for the automorphism `X -> X^g`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutomorphismPermutation {
    galois: u64,
    map: Vec<u32>,
}

impl AutomorphismPermutation {
    /// Builds the permutation for degree `n` and odd Galois element `g` (mod 2n).
    pub fn new(n: usize, galois: u64) -> Result<Self> {
        let two_n = 2 * n as u64;
        if !n.is_power_of_two() || n < 2 {
            return Err(RingError::InvalidDegree { n });
        }
        if galois.is_multiple_of(2) {
            return Err(RingError::InvalidGaloisElement {
                element: galois,
                two_n,
            });
        }
        let g = galois % two_n;
        let log_n = n.trailing_zeros();
        let map = (0..n)
            .map(|i| {
                let e = 2 * crate::ntt::bit_reverse(i, log_n) as u64 + 1;
                let e2 = (e * g) % two_n;
                crate::ntt::bit_reverse(((e2 - 1) / 2) as usize, log_n) as u32
            })
            .collect();
        Ok(Self { galois: g, map })
    }

    /// The Galois element.
    pub fn galois(&self) -> u64 {
        self.galois
    }

    /// Applies the permutation to one NTT-form limb: `dst[i] = src[map[i]]`.
    pub fn apply_to_limb(&self, src: &[u64], dst: &mut [u64]) -> Result<()> {
        if src.len() != self.map.len() || dst.len() != self.map.len() {
            return Err(RingError::LengthMismatch {
                expected: self.map.len(),
                got: src.len().min(dst.len()),
            });
        }
        #[allow(
            clippy::indexing_slicing,
            reason = "permutation entries are < n = src.len()"
        )]
        for (d, &j) in dst.iter_mut().zip(&self.map) {
            *d = src[j as usize];
        }
        Ok(())
    }
}
