//! Baby-step giant-step sums of plaintext products, the shape of a multiplexed convolution
//! (see [`crate::pack`]'s channel layouts): rotated inputs (baby steps, hoisted per input)
//! times plaintexts, summed per group, each group's sum rotated by its giant step and added
//! into its output. [`Backend::bsgs_sum`] runs it; [`single_hoisted`] is the plain
//! evaluation every backend can do, the encrypted one also evaluates it double-hoisted.

use std::sync::Arc;

use henn_ckks::Scale;
use rayon::prelude::*;

use super::Backend;
use crate::error::{ExecError, Result};

/// The structure of a baby-step giant-step sum (no values: the plaintexts come from a
/// function of the term).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bsgs {
    /// The rotated inputs `rot_β(xs[j])` as `(j, β)`, sorted (a zero `β` is the input).
    pub inputs: Vec<(usize, i64)>,
    /// The groups as `(output, γ)`: each group's sum is rotated by `γ` into its output.
    pub groups: Vec<(usize, i64)>,
    /// The products as `(group, rotated input)` indices into `groups` and `inputs`.
    pub terms: Vec<(usize, usize)>,
    /// Number of outputs.
    pub n_out: usize,
    /// Double hoisting: baby steps and products over the key-switching basis `Q ∪ P`, giant
    /// rotations summed there too, one ModDown per output (a backend without it evaluates
    /// the same sum single-hoisted; the result is the same up to rounding).
    pub double: bool,
}

/// The slot values of term `t`'s plaintext, written into a zeroed slot vector.
pub type DiagFn<'a> = dyn Fn(usize, &mut [f64]) + Sync + 'a;

impl Bsgs {
    /// Checks the indices against `inputs` ciphertexts.
    pub fn check(&self, inputs: usize) -> Result<()> {
        let bad = |what: String| {
            Err(ExecError::Internal(format!("baby-step giant-step sum: {what}")).into())
        };
        if let Some(&(j, _)) = self.inputs.iter().find(|(j, _)| *j >= inputs) {
            return bad(format!("rotated input of missing input {j}"));
        }
        if self.inputs.windows(2).any(|w| w[0] >= w[1]) {
            return bad("rotated inputs not sorted and distinct".into());
        }
        if let Some(&(g, _)) = self.groups.iter().find(|(g, _)| *g >= self.n_out) {
            return bad(format!("group of missing output {g}"));
        }
        if let Some(&(g, r)) = self
            .terms
            .iter()
            .find(|(g, r)| *g >= self.groups.len() || *r >= self.inputs.len())
        {
            return bad(format!("term ({g}, {r}) out of range"));
        }
        let mut used = vec![false; self.groups.len()];
        for &(g, _) in &self.terms {
            used[g] = true;
        }
        if let Some(g) = used.iter().position(|u| !u) {
            return bad(format!("group {g} has no term"));
        }
        Ok(())
    }

    /// The baby steps of input `j`, in `inputs` order.
    pub fn steps_of(&self, j: usize) -> Vec<i64> {
        self.inputs
            .iter()
            .filter(|e| e.0 == j)
            .map(|e| e.1)
            .collect()
    }
}

/// The slot vector of term `t`, written by `diag` into a zeroed vector.
pub(super) fn diag_vector(slots: usize, t: usize, diag: &DiagFn<'_>) -> Vec<f64> {
    let mut v = vec![0.0; slots];
    diag(t, &mut v);
    v
}

/// The rotated copies of `x`, one per step (zero steps reuse `x`), one hoisted batch.
pub fn rotations<B: Backend>(b: &B, x: &B::Ct, steps: &[i64]) -> Result<Vec<B::Ct>> {
    let nz: Vec<i64> = steps.iter().copied().filter(|&k| k != 0).collect();
    let mut rots = if nz.is_empty() {
        Vec::new()
    } else {
        b.rotate_hoisted(x, &nz)?
    }
    .into_iter();
    steps
        .iter()
        .map(|&k| {
            if k == 0 {
                Ok(x.clone())
            } else {
                rots.next()
                    .ok_or_else(|| ExecError::Internal("missing rotation".into()).into())
            }
        })
        .collect()
}

/// The products as `(group, rotated input, plaintext)` for a matrix product.
pub(super) fn product_terms<'a, P>(spec: &Bsgs, pts: &'a [Arc<P>]) -> Vec<(usize, usize, &'a P)> {
    spec.terms
        .iter()
        .zip(pts)
        .map(|(&(g, r), p)| (g, r, &**p))
        .collect()
}

/// Each group's rotated sum (`rotate` for a non-zero giant step) added into its output with
/// `add`; `None` for an output without groups.
pub(super) fn into_outputs<T: Send>(
    spec: &Bsgs,
    sums: Vec<T>,
    rotate: impl Fn(T, i64) -> Result<T> + Sync + Send,
    add: impl Fn(&mut T, &T) -> Result<()>,
) -> Result<Vec<Option<T>>> {
    let parts: Vec<T> = spec
        .groups
        .par_iter()
        .zip(sums.into_par_iter())
        .map(|(&(_, gamma), acc)| {
            if gamma == 0 {
                Ok(acc)
            } else {
                rotate(acc, gamma)
            }
        })
        .collect::<Result<_>>()?;
    let mut outs: Vec<Option<T>> = (0..spec.n_out).map(|_| None).collect();
    for (&(g, _), p) in spec.groups.iter().zip(parts) {
        match outs[g].as_mut() {
            None => outs[g] = Some(p),
            Some(a) => add(a, &p)?,
        }
    }
    Ok(outs)
}

/// [`Backend::bsgs_sum`] single-hoisted: hoisted baby rotations per input, one plaintext
/// matrix product, a plain rotation per group with a non-zero giant step, the groups
/// summed per output (`None` for an output without groups). No rescale.
pub fn single_hoisted<B: Backend>(
    b: &B,
    xs: &[&B::Ct],
    spec: &Bsgs,
    diag: &DiagFn<'_>,
    level: usize,
    scale: Scale,
) -> Result<Vec<Option<B::Ct>>> {
    spec.check(xs.len())?;
    let slots = b.slots();
    // hoisted rotations per input, in `inputs` order
    let per_input: Vec<Vec<B::Ct>> = (0..xs.len())
        .into_par_iter()
        .map(|j| -> Result<Vec<B::Ct>> { rotations(b, xs[j], &spec.steps_of(j)) })
        .collect::<Result<_>>()?;
    let rotated: Vec<&B::Ct> = per_input.iter().flatten().collect();
    let pts: Vec<Arc<B::Pt>> = (0..spec.terms.len())
        .into_par_iter()
        .map(|t| b.encode_cached(&diag_vector(slots, t, diag), level, scale))
        .collect::<Result<_>>()?;
    let sums = b.mul_plain_matrix(&rotated, &product_terms(spec, &pts), spec.groups.len())?;
    into_outputs(
        spec,
        sums,
        |acc, gamma| b.rotate(&acc, gamma),
        |a, p| b.add_assign(a, p),
    )
}
