"""Shared helpers for training and exporting the models henn ships.

Conventions (see python/README.md):
  * inputs are raw bytes / 255 as floats in [0, 1], NCHW; no hidden normalisation;
  * MNIST input shape [1, 1, 28, 28], CIFAR-10 [1, 3, 32, 32] (channels R, G, B);
  * exported ONNX files use a fixed batch of 1, opset 13, TorchScript exporter, no constant
    folding, BatchNormalization nodes kept (inference form, running statistics);
  * polynomial activations are built from Mul/Add only, with coefficients stored as scalar
    float32 initializers (no Constant nodes, no Pow);
  * test accuracy and fixture logits are computed in float64 (model.double()) so that a
    float64 plaintext evaluation of the ONNX file reproduces them.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
MODELS = ROOT / "models"
FIXTURES = MODELS / "fixtures"
SAMPLES = MODELS / "samples"

OPSET = 13
# BatchNorm epsilon is stored as a float32 attribute in ONNX; use exactly that value in
# PyTorch too so that the float64 reference evaluation matches a float64 import of the file.
BN_EPS = float(np.float32(1e-5))


def setup(seed: int = 0, threads: int | None = None) -> None:
    if threads is None:
        threads = int(os.environ.get("HENN_TORCH_THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


# ----------------------------------------------------------------------------- data


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (ubyte only) into a numpy uint8 array."""
    with open(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: size mismatch")
    return data.reshape(dims)


def load_mnist(split: str, dataset: str = "mnist") -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images uint8 [N,1,28,28], labels int64 [N]) for split 'train' or 'test'."""
    prefix = {"train": "train", "test": "t10k"}[split]
    d = DATA / dataset
    if not (d / f"{prefix}-images-idx3-ubyte").exists():
        raise FileNotFoundError(f"{d} missing: run scripts/fetch-data.sh first")
    x = read_idx(d / f"{prefix}-images-idx3-ubyte")
    y = read_idx(d / f"{prefix}-labels-idx1-ubyte")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def load_cifar(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images uint8 [N,3,32,32] RGB, labels int64 [N]) from data/cifar10/*.bin."""
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    xs, ys = [], []
    for n in names:
        p = DATA / "cifar10" / n
        if not p.exists():
            raise FileNotFoundError(f"{p} missing: run scripts/fetch-data.sh first")
        rec = np.fromfile(p, dtype=np.uint8).reshape(-1, 3073)
        ys.append(rec[:, 0].astype(np.int64))
        xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def to_float(x_u8: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return x_u8.to(dtype) / 255.0


# ----------------------------------------------------------------------------- augmentation


def affine_augment(x: torch.Tensor, gen: torch.Generator, max_deg: float = 15.0,
                   scale: tuple[float, float] = (0.8, 1.2), max_shift: float = 0.0,
                   hflip: bool = False) -> torch.Tensor:
    """Random rotation (+-max_deg), isotropic scale, optional translation (fraction of the
    image size) and horizontal flip, with bilinear sampling and zero fill."""
    n = x.shape[0]
    ang = (torch.rand(n, generator=gen) * 2 - 1) * (max_deg * np.pi / 180.0)
    s = torch.rand(n, generator=gen) * (scale[1] - scale[0]) + scale[0]
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin
    theta[:, 1, 1] = cos
    if max_shift > 0:
        theta[:, :, 2] = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 * max_shift)
    if hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        theta[flip, :, 0] = -theta[flip, :, 0]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def add_affine_args(ap, *, rot: float, scale: float, shift: float, clean_last: int) -> None:
    """The MNIST scripts' augmentation options (see affine_from_args)."""
    ap.add_argument("--rot", type=float, default=rot, help="max rotation (degrees)")
    ap.add_argument("--scale", type=float, default=scale, help="scale range 1 +- SCALE")
    ap.add_argument("--shift", type=float, default=shift, help="max translation (fraction of the size)")
    ap.add_argument("--clean-last", type=int, default=clean_last,
                    help="final epochs without augmentation")


def affine_from_args(a):
    """augment(x, gen) for train() from the options of add_affine_args."""
    return lambda x, g: affine_augment(x, g, a.rot, (1 - a.scale, 1 + a.scale), a.shift)


# ----------------------------------------------------------------------------- activations


class Square(nn.Module):
    """x * x  (exports as Mul(x, x))."""

    def forward(self, x):
        return x * x


class Poly(nn.Module):
    """Polynomial activation sum_k c_k x^k built from Mul/Add only.

    Coefficients are scalar float32 buffers, i.e. ONNX initializers of shape [].
    Supported: degree 2 (c2 x^2 + c1 x + c0) and degree 4 with no x^3 term
    (c4 x^4 + c2 x^2 + c1 x + c0), which covers the swish approximations.
    """

    def __init__(self, coeffs: dict[int, float]):
        super().__init__()
        self.degrees = sorted(coeffs)
        assert set(self.degrees) <= {0, 1, 2, 4}, coeffs
        for k, c in coeffs.items():
            self.register_buffer(f"c{k}", torch.tensor(float(c), dtype=torch.float32))

    def forward(self, x):
        x2 = x * x
        y = self.c2 * x2 + self.c1 * x
        if 4 in self.degrees:
            y = self.c4 * (x2 * x2) + y
        return y + self.c0


ACTIVATIONS = {
    "square": ("x*x", lambda: Square()),
    "swish2": ("0.1x^2 + 0.5x + 0.24", lambda: Poly({2: 0.1, 1: 0.5, 0: 0.24})),
    "swish4": ("-0.001328x^4 + 0.128x^2 + 0.5x + 0.1773",
               lambda: Poly({4: -0.001328, 2: 0.128, 1: 0.5, 0: 0.1773})),
    # not HE-friendly: the subject of post-training approximation (`henn approximate`)
    "relu": ("ReLU", lambda: nn.ReLU()),
}


def make_act(name: str) -> nn.Module:
    return ACTIVATIONS[name][1]()


def set_bn_eps(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.eps = BN_EPS


# ----------------------------------------------------------------------------- training


def train(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, *, epochs: int,
          lr: float, batch_size: int = 128, weight_decay: float = 1e-4, seed: int = 0,
          augment=None, clip: float | None = 1.0, log_prefix: str = "",
          x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
          clean_last: int = 0, regularizer=None, epoch_note=None) -> float:
    """AdamW + one-cycle LR. x_train is uint8; augment(xf, gen) -> xf, applied in every epoch
    but the last `clean_last` ones (which see the clean images at the annealed learning rate,
    so that the final weights and BatchNorm statistics match unaugmented inputs).
    regularizer() -> scalar tensor is added to the cross-entropy of every step (e.g. an L0
    penalty); epoch_note() -> str is appended to each epoch's log line. Returns seconds."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(x_train) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.2)
    t0 = time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        tot_loss, tot_ok, seen = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            xb = to_float(x_train[idx])
            yb = y_train[idx]
            if augment is not None and ep < epochs - clean_last:
                xb = augment(xb, gen)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{log_prefix} non-finite loss at epoch {ep} step {i}")
            opt.zero_grad(set_to_none=True)
            (loss if regularizer is None else loss + regularizer()).backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(idx)
            tot_ok += (out.argmax(1) == yb).sum().item()
            seen += len(idx)
        msg = (f"{log_prefix} epoch {ep + 1}/{epochs} loss {tot_loss / seen:.4f} "
               f"train_acc {tot_ok / seen:.4f} time {time.time() - t0:.0f}s")
        if x_val is not None:
            msg += f" test_acc(f32) {evaluate(model, x_val, y_val, torch.float32)[0]:.4f}"
        if epoch_note is not None:
            msg += " " + epoch_note()
        print(msg, flush=True)
    return time.time() - t0


@torch.no_grad()
def evaluate(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, dtype=torch.float64,
             batch_size: int = 1000) -> tuple[float, torch.Tensor]:
    """Accuracy over the whole set and the logits, computed in `dtype` on a copy-free
    model cast (the model is cast back to float32 afterwards)."""
    was_training = model.training
    model.eval()
    model.to(dtype)
    outs = []
    for i in range(0, len(x_u8), batch_size):
        outs.append(model(to_float(x_u8[i : i + batch_size], dtype)))
    logits = torch.cat(outs)
    model.float()
    model.train(was_training)
    acc = (logits.argmax(1) == y).double().mean().item()
    return acc, logits


# ----------------------------------------------------------------------------- export


def _simplify(m) -> None:
    """Two cosmetic rewrites of the TorchScript exporter's output, in place:

    * the exporter deduplicates equal initializers (e.g. the coefficients of two identical
      polynomial activations) and re-creates the duplicates with Identity nodes; replace each
      `y = Identity(initializer x)` by an initializer y holding a copy of x;
    * remove the `momentum` attribute of BatchNormalization (only meaningful for training;
      the nodes are inference BatchNormalization with running statistics, one output).
    """
    import onnx

    inits = {i.name: i for i in m.graph.initializer}
    keep = []
    for n in m.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[n.input[0]])
            t.name = n.output[0]
            m.graph.initializer.append(t)
            inits[t.name] = t
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    for n in m.graph.node:
        if n.op_type == "BatchNormalization":
            attrs = [a for a in n.attribute if a.name != "momentum"]
            del n.attribute[:]
            n.attribute.extend(attrs)


def _inference_bn_class():
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        """Inference-mode BatchNormalization for onnx.reference.

        onnx.reference's BatchNormalization_9 (used for opsets 9..13) fills in the default
        momentum and then computes batch statistics (training behaviour); the ONNX spec's
        single-output form uses the given running mean / variance.
        """

        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None):
            sh = (1, -1) + (1,) * (x.ndim - 2)
            eps = 1e-5 if epsilon is None else epsilon
            y = (x - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + eps) * scale.reshape(sh) + bias.reshape(sh)
            return (y.astype(x.dtype),)

    return BatchNormalization


def export_onnx(model: nn.Module, name: str, input_shape: list[int], x_check: torch.Tensor) -> dict:
    """Export with the TorchScript exporter, check the graph, compare with PyTorch.

    x_check: uint8 images [K, C, H, W] used for the ONNX-vs-PyTorch comparison.
    Returns a summary dict (op types, max abs diff, ...).
    """
    import onnx
    from onnx.reference import ReferenceEvaluator

    _InferenceBatchNorm = _inference_bn_class()

    model = model.float().eval()
    path = MODELS / f"{name}.onnx"
    dummy = torch.zeros(*input_shape)
    torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
                      do_constant_folding=False, input_names=["input"], output_names=["logits"],
                      training=torch.onnx.TrainingMode.PRESERVE)
    m = onnx.load(str(path))
    _simplify(m)
    onnx.save(m, str(path))
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    ops = [n.op_type for n in m.graph.node]
    n_bn_torch = sum(isinstance(x, (nn.BatchNorm1d, nn.BatchNorm2d)) for x in model.modules())
    if ops.count("BatchNormalization") != n_bn_torch:
        raise RuntimeError(f"{name}: expected {n_bn_torch} BatchNormalization nodes, got {ops}")
    for n in m.graph.node:
        if n.op_type == "BatchNormalization":
            if len(n.output) != 1:
                raise RuntimeError(f"{name}: BatchNormalization exported in training form")
    sess = ReferenceEvaluator(m, new_ops=[_InferenceBatchNorm])
    max_abs, max_rel = 0.0, 0.0
    with torch.no_grad():
        for i in range(len(x_check)):
            xi = to_float(x_check[i : i + 1])
            ref = model(xi).numpy()
            got = sess.run(None, {"input": xi.numpy()})[0]
            d = np.abs(ref - got)
            max_abs = max(max_abs, float(d.max()))
            max_rel = max(max_rel, float((d / np.maximum(1.0, np.abs(ref))).max()))
    # float32 through two squares without normalisation (SEALion nets) differs by ~1e-5
    if max_rel > 1e-4:
        raise RuntimeError(f"{name}: ONNX and PyTorch disagree: max abs {max_abs}, rel {max_rel}")
    print(f"{name}: exported {path.relative_to(ROOT)}; ops {sorted(set(ops))}; "
          f"ONNX vs PyTorch (f32, {len(x_check)} images) max abs diff {max_abs:.3g}, "
          f"max diff/max(1,|ref|) {max_rel:.3g}", flush=True)
    return {"ops": ops, "max_abs_diff_vs_torch": max_abs, "max_rel_diff_vs_torch": max_rel,
            "checked_images": len(x_check)}


def op_summary(ops: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in ops:
        out[o] = out.get(o, 0) + 1
    return out


def write_outputs(model: nn.Module, *, name: str, dataset: str, input_shape: list[int],
                  x_test: torch.Tensor, y_test: torch.Tensor, epochs: int, seed: int,
                  activation: str, architecture: str, notes: str, train_time_s: float,
                  command: str, extra: dict | None = None) -> dict:
    """Export ONNX, evaluate in float64, write models/<name>.json and the fixture."""
    MODELS.mkdir(exist_ok=True)
    FIXTURES.mkdir(exist_ok=True)
    set_bn_eps(model)
    acc64, logits64 = evaluate(model, x_test, y_test, torch.float64)
    acc32, _ = evaluate(model, x_test, y_test, torch.float32)
    exp = export_onnx(model, name, input_shape, x_test[:20])
    n_params = sum(p.numel() for p in model.parameters())
    meta = {
        "name": name,
        "dataset": dataset,
        "input_shape": input_shape,
        "input_convention": "raw bytes / 255 as float in [0,1], NCHW, no normalisation",
        "test_accuracy": acc64,
        "test_accuracy_f32": acc32,
        "test_correct": int(round(acc64 * len(y_test))),
        "test_size": len(y_test),
        "epochs": epochs,
        "seed": seed,
        "activation": activation,
        "architecture": architecture,
        "parameters": n_params,
        "train_time_s": round(train_time_s, 1),
        "onnx_opset": OPSET,
        "onnx_ops": op_summary(exp["ops"]),
        "onnx_max_abs_diff_vs_torch_f32": exp["max_abs_diff_vs_torch"],
        "command": command,
        "torch_version": torch.__version__,
        "notes": notes,
    }
    if extra:
        meta.update(extra)
    with open(MODELS / f"{name}.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    fixture = {
        "model": name,
        "dataset": dataset,
        "split": "test",
        "first": 100,
        "dtype": "float64",
        "logits": [[float(v) for v in row] for row in logits64[:100].tolist()],
        "labels": [int(v) for v in y_test[:100].tolist()],
    }
    with open(FIXTURES / f"{name}.logits100.json", "w") as f:
        json.dump(fixture, f)
        f.write("\n")
    print(f"{name}: test accuracy (float64, {len(y_test)} images) {acc64:.4f}  (float32 {acc32:.4f})",
          flush=True)
    return meta
