//! Dense f64 tensors in row-major (C) order, NCHW for images.

use crate::error::{NnError, Result};

/// A dense, row-major f64 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f64>,
}

/// Number of elements of a shape (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy-style broadcast of two shapes, or `None` if they are incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

impl Tensor {
    /// A tensor from a shape and data; errors if the lengths disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Result<Self> {
        if numel(&shape) != data.len() {
            return Err(NnError::ShapeMismatch {
                node: "tensor".into(),
                detail: format!(
                    "shape {:?} needs {} elements but {} were given",
                    shape,
                    numel(&shape),
                    data.len()
                ),
            });
        }
        Ok(Self { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = numel(&shape);
        Self {
            shape,
            data: vec![0.0; n],
        }
    }

    /// A scalar (rank-0) tensor.
    pub fn scalar(v: f64) -> Self {
        Self {
            shape: vec![],
            data: vec![v],
        }
    }

    /// A rank-1 tensor.
    pub fn vector(v: Vec<f64>) -> Self {
        Self {
            shape: vec![v.len()],
            data: v,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// Mutable elements in row-major order.
    pub fn data_mut(&mut self) -> &mut [f64] {
        &mut self.data
    }

    /// Consumes the tensor, returning its elements.
    pub fn into_data(self) -> Vec<f64> {
        self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The same data with another shape of the same size.
    pub fn reshape(mut self, shape: Vec<usize>) -> Result<Self> {
        if numel(&shape) != self.data.len() {
            return Err(NnError::ShapeMismatch {
                node: "reshape".into(),
                detail: format!("cannot reshape {:?} to {:?}", self.shape, shape),
            });
        }
        self.shape = shape;
        Ok(self)
    }

    /// If every element is equal, that value.
    pub fn as_uniform(&self) -> Option<f64> {
        let first = *self.data.first()?;
        self.data.iter().all(|&v| v == first).then_some(first)
    }

    /// Element-wise map.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Self {
        Self {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }

    /// Numpy-broadcasting binary operation.
    pub fn broadcast_with(&self, other: &Tensor, f: impl Fn(f64, f64) -> f64) -> Result<Tensor> {
        let out_shape =
            broadcast_shapes(&self.shape, &other.shape).ok_or_else(|| NnError::ShapeMismatch {
                node: "broadcast".into(),
                detail: format!(
                    "shapes {:?} and {:?} cannot be broadcast together",
                    self.shape, other.shape
                ),
            })?;
        if self.shape == other.shape {
            let data = self
                .data
                .iter()
                .zip(&other.data)
                .map(|(&a, &b)| f(a, b))
                .collect();
            return Ok(Tensor {
                shape: out_shape,
                data,
            });
        }
        // a scalar operand (polynomial coefficients, scale factors): no index arithmetic
        if other.data.len() == 1 && out_shape == self.shape {
            let c = other.data[0];
            return Ok(Tensor {
                shape: out_shape,
                data: self.data.iter().map(|&a| f(a, c)).collect(),
            });
        }
        if self.data.len() == 1 && out_shape == other.shape {
            let c = self.data[0];
            return Ok(Tensor {
                shape: out_shape,
                data: other.data.iter().map(|&b| f(c, b)).collect(),
            });
        }
        let n = out_shape.len();
        let out_strides = strides(&out_shape);
        let bstr = |s: &[usize]| -> Vec<usize> {
            let st = strides(s);
            (0..n)
                .map(|i| {
                    if i + s.len() >= n {
                        let j = i + s.len() - n;
                        if s[j] == 1 { 0 } else { st[j] }
                    } else {
                        0
                    }
                })
                .collect()
        };
        let sa = bstr(&self.shape);
        let sb = bstr(&other.shape);
        let total = numel(&out_shape);
        let mut data = Vec::with_capacity(total);
        for flat in 0..total {
            let (mut ia, mut ib, mut rem) = (0usize, 0usize, flat);
            for d in 0..n {
                let idx = rem / out_strides[d];
                rem %= out_strides[d];
                ia += idx * sa[d];
                ib += idx * sb[d];
            }
            data.push(f(self.data[ia], other.data[ib]));
        }
        Ok(Tensor {
            shape: out_shape,
            data,
        })
    }

    /// Largest absolute element-wise difference to another tensor of the same shape.
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f64> {
        (self.shape == other.shape).then(|| {
            self.data
                .iter()
                .zip(&other.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
        })
    }

    /// Index of the largest element (first one on ties), `None` if empty or NaN-only.
    pub fn argmax(&self) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (i, &v) in self.data.iter().enumerate() {
            if v.is_nan() {
                continue;
            }
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((i, v));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        let a = Tensor::new(vec![1, 2, 2, 2], (0..8).map(f64::from).collect()).unwrap();
        let b = Tensor::new(vec![2, 1, 1], vec![10.0, 20.0]).unwrap();
        let c = a.broadcast_with(&b, |x, y| x + y).unwrap();
        assert_eq!(c.shape(), &[1, 2, 2, 2]);
        assert_eq!(c.data(), &[10.0, 11.0, 12.0, 13.0, 24.0, 25.0, 26.0, 27.0]);
        assert!(broadcast_shapes(&[3, 2], &[3]).is_none());
        assert_eq!(broadcast_shapes(&[1, 10], &[]), Some(vec![1, 10]));
    }

    #[test]
    fn argmax_and_reshape() {
        let t = Tensor::vector(vec![1.0, 3.0, 3.0, -1.0]);
        assert_eq!(t.argmax(), Some(1));
        assert!(t.clone().reshape(vec![3]).is_err());
        assert_eq!(t.reshape(vec![2, 2]).unwrap().shape(), &[2, 2]);
    }
}
