"""Independent float64 check of the committed models (no PyTorch involved).

Evaluates every models/<name>.onnx with a tiny numpy float64 interpreter (weights read from
the file as float32 and widened to float64, inputs bytes/255 in float64) on the full test set
and checks that
  * the accuracy equals `test_accuracy` in models/<name>.json exactly (same count), and
  * the logits of the first 100 test images match models/fixtures/<name>.logits100.json.

    python python/check_models.py [name ...]
"""

import json
import sys

import numpy as np
import onnx
from onnx import numpy_helper

import common as C


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def conv(x, w, b, a):
    sh, sw = a.get("strides", [1, 1])
    p = a.get("pads", [0, 0, 0, 0])
    assert a.get("group", 1) == 1 and a.get("dilations", [1, 1]) == [1, 1]
    x = np.pad(x, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])))
    kh, kw = w.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    y = np.einsum("nchwij,ocij->nohw", win, w, optimize=True)
    return y + b.reshape(1, -1, 1, 1) if b is not None else y


def run(model, x):
    env = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    env[model.graph.input[0].name] = x
    for n in model.graph.node:
        i = [env[k] if k else None for k in n.input]
        a = attrs(n)
        t = n.op_type
        if t == "Conv":
            y = conv(i[0], i[1], i[2] if len(i) > 2 else None, a)
        elif t == "BatchNormalization":
            sh = (1, -1) + (1,) * (i[0].ndim - 2)
            eps = np.float64(np.float32(a.get("epsilon", 1e-5)))
            y = (i[0] - i[3].reshape(sh)) / np.sqrt(i[4].reshape(sh) + eps) * i[1].reshape(sh) + i[2].reshape(sh)
        elif t == "Mul":
            y = i[0] * i[1]
        elif t == "Add":
            y = i[0] + i[1]
        elif t == "Flatten":
            assert a.get("axis", 1) == 1
            y = i[0].reshape(i[0].shape[0], -1)
        elif t == "Gemm":
            assert a.get("transB") == 1 and a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0
            y = i[0] @ i[1].T + i[2]
        elif t == "AveragePool":
            k = a["kernel_shape"]
            assert a.get("strides") == k and not any(a.get("pads", [0]))
            n_, c, h, w = i[0].shape
            y = i[0].reshape(n_, c, h // k[0], k[0], w // k[1], k[1]).mean(axis=(3, 5))
        elif t == "GlobalAveragePool":
            y = i[0].mean(axis=(2, 3), keepdims=True)
        elif t == "Relu":
            y = np.maximum(i[0], 0.0)
        else:
            raise NotImplementedError(t)
        env[n.output[0]] = y
    return env[model.graph.output[0].name]


def check(name):
    meta = json.loads((C.MODELS / f"{name}.json").read_text())
    fix = json.loads((C.FIXTURES / f"{name}.logits100.json").read_text())
    model = onnx.load(str(C.MODELS / f"{name}.onnx"))
    if meta["dataset"].startswith("cifar"):
        x, y = C.load_cifar("test")
    else:
        x, y = C.load_mnist("test", meta["dataset"])
    x = x.numpy().astype(np.float64) / 255.0
    y = y.numpy()
    logits = np.concatenate([run(model, x[k : k + 500]) for k in range(0, len(x), 500)])
    correct = int((logits.argmax(1) == y).sum())
    ref = np.array(fix["logits"])
    diff = float(np.abs(logits[:100] - ref).max() / max(1.0, np.abs(ref).max()))
    ok = correct == meta["test_correct"] and diff < 1e-9 and fix["labels"] == y[:100].tolist()
    print(f"{name}: numpy-f64 {correct}/{len(y)} vs recorded {meta['test_correct']}; "
          f"fixture max rel diff {diff:.2e} -> {'OK' if ok else 'MISMATCH'}", flush=True)
    return ok


def main():
    names = sys.argv[1:] or sorted(p.stem for p in C.MODELS.glob("*.onnx"))
    ok = all([check(n) for n in names])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
