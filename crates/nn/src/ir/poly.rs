//! Polynomials in the Chebyshev basis on an interval: evaluation, products, conversion to
//! powers of x, and the choice between the two forms an activation may take in the IR
//! ([`polynomial_op`]).

use super::Op;

/// Highest degree kept in powers of x: above it a polynomial stays a Chebyshev series
/// ([`Op::Chebyshev`]), whose coefficients stay of the size of the function, where power
/// coefficients of a high-degree fit cancel by many orders of magnitude (and so would the
/// encrypted terms).
pub const POWER_MAX_DEGREE: usize = 8;

/// Highest degree of a Chebyshev series the IR accepts.
pub const CHEBYSHEV_MAX_DEGREE: usize = 1023;

/// `t = (2x - lo - hi) / (hi - lo)`, the point of `[-1, 1]` that `x` in `[lo, hi]` maps to.
pub fn to_unit(x: f64, lo: f64, hi: f64) -> f64 {
    (2.0 * x - lo - hi) / (hi - lo)
}

/// `sum_k c_k T_k(t)` by Clenshaw's recurrence.
pub fn clenshaw(c: &[f64], t: f64) -> f64 {
    let (mut b1, mut b2) = (0.0, 0.0);
    for &ck in c.iter().skip(1).rev() {
        let b0 = ck + 2.0 * t * b1 - b2;
        b2 = b1;
        b1 = b0;
    }
    c.first().copied().unwrap_or(0.0) + t * b1 - b2
}

/// `sum_k c_k T_k((2x - lo - hi) / (hi - lo))`.
pub fn chebyshev_eval(c: &[f64], lo: f64, hi: f64, x: f64) -> f64 {
    clenshaw(c, to_unit(x, lo, hi))
}

fn trim(mut c: Vec<f64>) -> Vec<f64> {
    while c.len() > 1 && c.last() == Some(&0.0) {
        c.pop();
    }
    c
}

/// Sum of two Chebyshev series.
pub fn chebyshev_add(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; a.len().max(b.len())];
    for (o, v) in out.iter_mut().zip(a) {
        *o += v;
    }
    for (o, v) in out.iter_mut().zip(b) {
        *o += v;
    }
    trim(out)
}

/// Product of two Chebyshev series (`T_i T_j = (T_(i+j) + T_|i-j|) / 2`).
pub fn chebyshev_mul(a: &[f64], b: &[f64]) -> Vec<f64> {
    if a.is_empty() || b.is_empty() {
        return vec![0.0];
    }
    let mut out = vec![0.0; a.len() + b.len() - 1];
    for (i, &x) in a.iter().enumerate() {
        if x == 0.0 {
            continue;
        }
        for (j, &y) in b.iter().enumerate() {
            let h = 0.5 * x * y;
            out[i + j] += h;
            out[i.abs_diff(j)] += h;
        }
    }
    trim(out)
}

/// Chebyshev series in `t` to powers of `t`.
pub fn chebyshev_to_power(c: &[f64]) -> Vec<f64> {
    let n = c.len();
    let mut out = vec![0.0; n];
    // T_0 = 1, T_1 = t, T_(k+1) = 2 t T_k - T_(k-1), as power coefficient vectors
    let mut prev = vec![0.0; n];
    let mut cur = vec![0.0; n];
    if n > 0 {
        prev[0] = 1.0;
    }
    if n > 1 {
        cur[1] = 1.0;
    }
    for (k, &ck) in c.iter().enumerate() {
        let tk = match k {
            0 => prev.clone(),
            1 => cur.clone(),
            _ => {
                let mut next = vec![0.0; n];
                for i in 0..n - 1 {
                    next[i + 1] += 2.0 * cur[i];
                }
                for i in 0..n {
                    next[i] -= prev[i];
                }
                prev = std::mem::replace(&mut cur, next);
                cur.clone()
            }
        };
        for (o, v) in out.iter_mut().zip(&tk) {
            *o += ck * v;
        }
    }
    out
}

/// `p(t)` with `t = (x - mid) / half` as powers of `x`.
pub fn power_in_x(p: &[f64], mid: f64, half: f64) -> Vec<f64> {
    let n = p.len();
    let mut out = vec![0.0; n];
    // (x - mid)^k / half^k expanded with binomial coefficients
    for (k, &pk) in p.iter().enumerate() {
        let mut binom = 1.0;
        for (j, o) in out.iter_mut().enumerate().take(k + 1) {
            // term C(k, j) x^j (-mid)^(k-j)
            *o += pk * binom * (-mid).powi((k - j) as i32) / half.powi(k as i32);
            binom = binom * (k - j) as f64 / (j + 1) as f64;
        }
    }
    out
}

/// A Chebyshev series on `[lo, hi]` in powers of x.
pub fn chebyshev_to_power_in_x(c: &[f64], lo: f64, hi: f64) -> Vec<f64> {
    power_in_x(&chebyshev_to_power(c), (lo + hi) / 2.0, (hi - lo) / 2.0)
}

/// The IR op for the Chebyshev series `c` on `[lo, hi]`: [`Op::Polynomial`] in powers of x up
/// to degree [`POWER_MAX_DEGREE`] (the layer code evaluates powers with the leading
/// coefficient folded into the next layer, one level fewer than the Chebyshev circuit at
/// degrees `2^k`), [`Op::Chebyshev`] above.
pub fn polynomial_op(c: &[f64], lo: f64, hi: f64) -> Op {
    let c = trim(c.to_vec());
    if c.len() <= POWER_MAX_DEGREE + 1 {
        Op::Polynomial {
            coeffs: trim(chebyshev_to_power_in_x(&c, lo, hi)),
        }
    } else {
        Op::Chebyshev { lo, hi, coeffs: c }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn direct(c: &[f64], t: f64) -> f64 {
        c.iter()
            .enumerate()
            .map(|(k, v)| v * (k as f64 * t.acos()).cos())
            .sum()
    }

    #[test]
    fn products_and_sums_match_pointwise() {
        let a = [0.3, -1.0, 0.5, 0.25];
        let b = [-0.2, 0.7, 0.0, 0.1, 0.05];
        let p = chebyshev_mul(&a, &b);
        let s = chebyshev_add(&a, &b);
        for i in 0..41 {
            let t = -1.0 + i as f64 / 20.0;
            let (fa, fb) = (direct(&a, t), direct(&b, t));
            assert!((clenshaw(&p, t) - fa * fb).abs() < 1e-12);
            assert!((clenshaw(&s, t) - fa - fb).abs() < 1e-12);
            assert!((clenshaw(&a, t) - fa).abs() < 1e-12);
        }
    }

    #[test]
    fn powers_in_x_agree_at_low_degree() {
        let c = [0.3, -1.0, 0.5, 0.25, 0.125];
        let p = chebyshev_to_power_in_x(&c, -3.0, 5.0);
        for i in 0..41 {
            let x = -3.0 + 8.0 * i as f64 / 40.0;
            let h = p.iter().rev().fold(0.0, |acc, &v| acc * x + v);
            assert!((h - chebyshev_eval(&c, -3.0, 5.0, x)).abs() < 1e-11);
        }
        assert!(matches!(
            polynomial_op(&c, -3.0, 5.0),
            Op::Polynomial { .. }
        ));
        assert!(matches!(
            polynomial_op(&[1.0; 12], -3.0, 5.0),
            Op::Chebyshev { .. }
        ));
    }
}
