#![doc = r#"
henn-nn: the neural-network side of henn.

The modules `ir`, `onnx`, `reference`, `rewrite` and `data` know nothing about encryption. The
homomorphic side is built in floors, each using only the ones below it:

* [`backend`]: the `Backend` trait (homomorphic arithmetic as layer code sees it, op counts)
  with encrypted, simulated and slots implementations;
* [`pack`]: packing layouts: the layout plan (where every value lives, decided once) and the
  layer code of every op per layout (batch, channel; shared element-wise code);
* [`exec`]: the executor (node order, row streaming, liveness, per-layer stats);
* [`plan`]: depth, magnitudes, CKKS parameters, rotations and the layout plan, in a `Plan`
  that servers check before running it;
* [`session`]: client (secret key; needs only the plan) and server (evaluation keys only),
  the wire types between them, and both in one process for evaluation.

Besides them:

* [`ir`]: a typed graph of tensor ops with static NCHW shapes ([`Graph`], [`Node`], [`Op`]);
* [`onnx`]: an ONNX importer ([`onnx::import_file`]) built on the `onnx-protobuf` crate, with one
  registry entry per supported ONNX op type and named errors for everything it rejects;
* [`reference`]: a plaintext f64 forward pass ([`reference::run`], [`reference::run_all`] for
  per-node intermediate values);
* [`rewrite`]: exact graph rewrites (batch-norm fusion, folding of constant affine ops into
  linear layers, merging of consecutive linear layers, polynomial recognition), each checked to
  leave the reference output unchanged;
* [`data`]: readers for IDX (MNIST, Fashion-MNIST), CIFAR-10 binary, PNG/PGM images and `.npy`
  arrays, producing f64 tensors with pixels scaled to `[0, 1]`.

```
use henn_nn::{Graph, Op, Tensor, reference};
let mut g = Graph::new("double", "x", vec![1, 4]);
let y = g.add_node("scale", Op::MulConst(Tensor::scalar(2.0)), vec![g.input()], "y")?;
g.set_output(y)?;
let out = reference::run(&g, &Tensor::new(vec![1, 4], vec![1.0, 2.0, 3.0, 4.0])?)?;
assert_eq!(out.data(), &[2.0, 4.0, 6.0, 8.0]);
# Ok::<(), henn_nn::NnError>(())
```
"#]

pub mod approx;
pub mod backend;
pub mod data;
pub mod error;
pub mod exec;
pub mod ir;
pub mod onnx;
pub mod pack;
pub mod plan;
pub mod reference;
pub mod report;
pub mod rewrite;
pub mod session;
pub mod tensor;

pub use error::{ExecError, NnError, Result};
pub use ir::{Graph, Node, Op, Value, ValueId};
pub use tensor::Tensor;
