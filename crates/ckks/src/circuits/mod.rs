//! Circuits built on the public [`Evaluator`](crate::Evaluator) API only: polynomial
//! evaluation in the Chebyshev basis ([`chebyshev`]) and linear transforms by diagonals with
//! baby-step giant-step and hoisted rotations ([`linear`]). Each circuit reports the depth
//! (levels) it consumes and the rotations it needs, so that callers can generate exactly the
//! keys it uses and plan levels before running it.

pub mod chebyshev;
pub mod linear;

pub use chebyshev::{Chebyshev, PolyArith, PolyEvalPlan};
pub use linear::{EncodedLinearTransform, Hoisting, LinearTransform};
