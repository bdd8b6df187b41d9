//! Hybrid (Han-Ki) key switching: decompose into digits of `alpha` primes, ModUp each digit
//! to `Q_l ∪ P`, inner product with the key, ModDown by `P`. Decomposition can be shared by
//! many rotations (hoisting): automorphisms commute with it, being permutations of NTT slots.

use henn_ring::{Ntt, Poly, simd};
use rayon::prelude::*;

use crate::error::{CkksError, Result};
use crate::keys::KeySwitchKey;
use crate::params::CkksParams;
use crate::types::Level;

/// A polynomial decomposed into ModUp'ed digits over `Q_l ∪ P` (NTT form).
#[derive(Clone, Debug)]
pub struct Decomposed {
    pub(crate) level: Level,
    pub(crate) digits: Vec<Poly<Ntt>>,
}

impl Decomposed {
    /// Level of the decomposed polynomial.
    pub fn level(&self) -> Level {
        self.level
    }
}

/// Decomposes `d` (NTT form over `q_0..q_level`).
pub(crate) fn decompose(params: &CkksParams, d: &Poly<Ntt>, level: Level) -> Result<Decomposed> {
    let t = params.level_tables(level)?;
    let d_coeff = d.clone().intt();
    let digits = t
        .digits
        .par_iter()
        .zip(t.mod_up.par_iter())
        .map(|(digit, conv)| -> Result<Poly<Ntt>> {
            let x = d_coeff.select_limbs(digit)?;
            let ext = conv.convert_centered(&x)?.ntt();
            let mut out = Poly::<Ntt>::zero(params.ring(), &t.qp_limbs)?;
            let mut ext_pos = 0;
            for (k, &limb) in t.qp_limbs.iter().enumerate() {
                let src = if digit.contains(&limb) {
                    // This digit's own limbs: the input itself (`d` is over q_0..q_level, so
                    // the position of a data prime is its context index).
                    d.limb(limb)?
                } else {
                    let s = ext.limb(ext_pos)?;
                    ext_pos += 1;
                    s
                };
                out.limb_mut(k)?.copy_from_slice(src);
            }
            Ok(out)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Decomposed { level, digits })
}

/// Inner product of a decomposition with a key, followed by ModDown: returns `(u_0, u_1)`
/// over `q_0..q_level` with `u_0 + u_1 s ≈ d s_from`.
pub(crate) fn apply_key(
    params: &CkksParams,
    dec: &Decomposed,
    key: &KeySwitchKey,
) -> Result<(Poly<Ntt>, Poly<Ntt>)> {
    let t = params.level_tables(dec.level)?;
    let (acc0, acc1) = inner_product(params, dec, key)?;
    let (r0, r1) = rayon::join(|| t.mod_down.apply(acc0), || t.mod_down.apply(acc1));
    Ok((r0?, r1?))
}

/// ModDown by `P` of a polynomial over `Q_level ∪ P`.
pub(crate) fn mod_down(params: &CkksParams, level: Level, x: Poly<Ntt>) -> Result<Poly<Ntt>> {
    Ok(params.level_tables(level)?.mod_down.apply(x)?)
}

/// `P * x` over `Q_level ∪ P` for `x` over `Q_level` (zero on the special primes).
pub(crate) fn lift_to_qp(params: &CkksParams, x: &Poly<Ntt>, level: Level) -> Result<Poly<Ntt>> {
    let ctx = params.ring();
    let p_limbs = params.p_limbs();
    let scalars = params
        .q_limbs(level)
        .iter()
        .map(|&i| -> Result<u64> {
            let m = ctx.modulus(i)?;
            let mut pm = 1u64;
            for &j in &p_limbs {
                pm = m.mul(pm, m.reduce(ctx.modulus(j)?.value()));
            }
            Ok(pm)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut y = x.clone();
    y.mul_scalar_assign(&scalars)?;
    Ok(y.concat_limbs(&Poly::<Ntt>::zero(ctx, &p_limbs)?)?)
}

/// Inner product of a decomposition with a key, without ModDown: `(u_0, u_1)` over
/// `Q_level ∪ P` with `u_0 + u_1 s ≈ P d s_from`.
///
/// Works limb by limb (in parallel): the digit limbs are multiplied with both key halves and
/// summed with one modular reduction per coefficient ([`simd::dot_product_2`]). Rotations
/// use Galois keys in hoisting form, so no digit is ever permuted here.
pub(crate) fn inner_product(
    params: &CkksParams,
    dec: &Decomposed,
    key: &KeySwitchKey,
) -> Result<(Poly<Ntt>, Poly<Ntt>)> {
    let t = params.level_tables(dec.level)?;
    if dec.level > key.level {
        return Err(CkksError::KeyLevel {
            key: key.level,
            needed: dec.level,
        });
    }
    if dec.digits.len() > key.b.len() {
        return Err(CkksError::InvalidParams(format!(
            "key has {} digits, decomposition needs {}",
            key.b.len(),
            dec.digits.len()
        )));
    }
    let ring = params.ring();
    let n = params.n();
    // the key's limbs are q_0..q_{key.level} then the special primes: a data prime's
    // position is its context index, a special prime's is shifted by the levels the key
    // does not cover
    let data = params.q().len();
    let shift = data - 1 - key.level.0;
    let pos = |ci: usize| if ci < data { ci } else { ci - shift };
    let mut acc0 = Poly::<Ntt>::zero(ring, &t.qp_limbs)?;
    let mut acc1 = Poly::<Ntt>::zero(ring, &t.qp_limbs)?;
    acc0.data_mut()
        .par_chunks_mut(n)
        .zip(acc1.data_mut().par_chunks_mut(n))
        .zip(t.qp_limbs.par_iter())
        .enumerate()
        .try_for_each(|(k, ((a0, a1), &ci))| -> Result<()> {
            let m = ring.modulus(ci)?;
            let xs = dec
                .digits
                .iter()
                .map(|dj| dj.limb(k))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let bs = key
                .b
                .iter()
                .take(xs.len())
                .map(|p| p.limb(pos(ci)))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let as_ = key
                .a
                .iter()
                .take(xs.len())
                .map(|p| p.limb(pos(ci)))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            simd::dot_product_2(a0, a1, &xs, &bs, &as_, m);
            Ok(())
        })?;
    Ok((acc0, acc1))
}
