//! NTT-friendly prime generation: primes `q ≡ 1 (mod 2N)` as close as possible to a target,
//! so that rescaling by `q` keeps the CKKS scale stable.

use crate::error::{Result, RingError};
use crate::modulus::{MAX_MODULUS_BITS, Modulus};

/// Deterministic Miller-Rabin primality test for 64-bit integers.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let mut d = n - 1;
    let mut s = 0;
    while d.is_multiple_of(2) {
        d /= 2;
        s += 1;
    }
    let mulmod = |a: u64, b: u64| ((u128::from(a) * u128::from(b)) % u128::from(n)) as u64;
    let powmod = |mut a: u64, mut e: u64| {
        let mut r = 1u64;
        while e > 0 {
            if e & 1 == 1 {
                r = mulmod(r, a);
            }
            a = mulmod(a, a);
            e >>= 1;
        }
        r
    };
    // These bases are a deterministic witness set for all n < 2^64.
    'witness: for a in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        let mut x = powmod(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mulmod(x, x);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// Whether `q` is a prime with `q ≡ 1 (mod 2n)` below 2^61.
pub fn is_ntt_friendly(q: u64, n: usize) -> bool {
    let two_n = 2 * n as u64;
    q < (1u64 << MAX_MODULUS_BITS) && q % two_n == 1 && is_prime(q)
}

/// Finds `count` distinct primes `q ≡ 1 (mod 2n)` closest to `2^log2_target`, alternating
/// the search below and above the target, skipping those in `exclude`. With `below_only`
/// every prime is `< 2^log2_target` (so it has exactly `log2_target` bits).
///
/// Results are sorted by distance to the target (closest first).
pub fn ntt_primes_near(
    log2_target: u32,
    n: usize,
    count: usize,
    exclude: &[u64],
    below_only: bool,
) -> Result<Vec<u64>> {
    let two_n = 2 * n as u64;
    let not_enough = RingError::NotEnoughPrimes {
        bits: log2_target,
        count,
        two_n,
    };
    if !(2..=MAX_MODULUS_BITS).contains(&log2_target) || (1u64 << log2_target) <= two_n {
        return Err(not_enough);
    }
    let target = 1u64 << log2_target;
    let max = 1u64 << MAX_MODULUS_BITS;
    // Candidates k*2n+1: `down` walks below the target, `up` above it.
    let mut down = Some((target - 1) / two_n * two_n + 1);
    let mut up = if below_only {
        None
    } else {
        Some(target / two_n * two_n + two_n + 1)
    };
    let mut found = Vec::with_capacity(count);
    let lower_limit = target >> 1;
    while found.len() < count {
        let dist = |c: u64| c.abs_diff(target);
        let pick_down = match (down, up) {
            (Some(d), Some(u)) => dist(d) <= dist(u),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return Err(not_enough),
        };
        let candidate = if pick_down {
            let d = down.unwrap_or(0);
            down = d.checked_sub(two_n).filter(|&x| x > lower_limit);
            d
        } else {
            let u = up.unwrap_or(0);
            up = u
                .checked_add(two_n)
                .filter(|&x| x < max && x < target.saturating_mul(2));
            u
        };
        if is_prime(candidate) && !exclude.contains(&candidate) && !found.contains(&candidate) {
            found.push(candidate);
        }
    }
    Ok(found)
}

/// The smallest primitive `2n`-th root of unity modulo the NTT-friendly prime `q`.
pub fn minimal_primitive_root(q: u64, n: usize) -> Result<u64> {
    let two_n = 2 * n as u64;
    if !is_ntt_friendly(q, n) {
        return Err(RingError::NotNttFriendly { q, two_n });
    }
    let m = Modulus::new(q)?;
    // g^((q-1)/2n) has order dividing 2n; it is primitive iff its n-th power is -1.
    let mut root = None;
    for x in 2..q {
        let g = m.pow(x, (q - 1) / two_n);
        if m.pow(g, n as u64) == q - 1 {
            root = Some(g);
            break;
        }
    }
    let g = root.ok_or(RingError::NotNttFriendly { q, two_n })?;
    // All primitive 2n-th roots are the odd powers of g; take the smallest.
    let g2 = m.mul(g, g);
    let mut current = g;
    let mut best = g;
    for _ in 0..n {
        best = best.min(current);
        current = m.mul(current, g2);
    }
    Ok(best)
}
