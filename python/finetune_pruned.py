"""Fine-tune a model pruned by `henn prune` (L1-norm filter pruning) and ship it.

The pruned ONNX model's initializers (named as the PyTorch parameters they were exported
from) give the channel counts and the starting weights; the network is rebuilt with those
counts, loaded, trained with its family's recipe and exported as models/<name>.onnx with its
JSON and fixture.

    python python/finetune_pruned.py PRUNED.onnx --family mnist_cnn3 --act square \\
        --epochs 30 --name mnist_cnn3_square_r1
    python python/finetune_pruned.py PRUNED.onnx --family cifar_cnn4 --act swish4 \\
        --epochs 15 --name cifar_cnn4_swish4_p10
"""

import argparse
import sys

import onnx
import torch
from onnx import numpy_helper

import common as C
from train_cifar_cnn4 import CNN4
from train_mnist_cnn3 import CNN3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--family", choices=["mnist_cnn3", "cifar_cnn4"], required=True)
    ap.add_argument("--act", choices=sorted(C.ACTIVATIONS), required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--name", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    C.setup(a.seed)
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
             for t in onnx.load(a.model).graph.initializer}
    if a.family == "mnist_cnn3":
        model = CNN3(a.act, inits["conv1.weight"].shape[0], inits["conv2.weight"].shape[0])
        xtr, ytr = C.load_mnist("train")
        xte, yte = C.load_mnist("test")
        dataset, shape = "mnist", [1, 1, 28, 28]
        augment = lambda x, g: C.affine_augment(x, g, 10.0, (0.9, 1.1), max_shift=0.08)
        wd = 1e-4
        arch = "mnist_cnn3 pruned: conv5x5 s2 1->%d, BN, act, conv5x5 s2 %d->%d, BN, act, " \
               "flatten, FC %d->10" % (model.conv1.out_channels, model.conv1.out_channels,
                                       model.conv2.out_channels, model.fc.in_features)
    else:
        chans = tuple(inits["features.%d.weight" % i].shape[0] for i in (0, 4, 8))
        model = CNN4(a.act, "gap", chans)
        xtr, ytr = C.load_cifar("train")
        xte, yte = C.load_cifar("test")
        dataset, shape = "cifar10-jpeg", [1, 3, 32, 32]
        augment = lambda x, g: C.affine_augment(x, g, 0.0, (1.0, 1.0), max_shift=0.125,
                                                hflip=True)
        wd = 5e-4
        arch = "cifar_cnn4 pruned: conv3x3 p1 channels %s, BN, act, avgpool2 each, global " \
               "average pool, FC %d->10" % (list(chans), chans[-1])
    state = model.state_dict()
    missing = [k for k in state if k not in inits and not k.endswith("num_batches_tracked")]
    if missing:
        sys.exit("the pruned model lacks parameters %s (was it exported by these scripts?)"
                 % missing)
    model.load_state_dict({k: inits.get(k, v) for k, v in state.items()})
    before, _ = C.evaluate(model, xte, yte, torch.float64)
    print("%s: pruned, before fine-tuning: %.4f" % (a.name, before))
    secs = C.train(model, xtr, ytr, epochs=a.epochs, lr=a.lr, batch_size=128, seed=a.seed,
                   weight_decay=wd, augment=augment, clip=1.0, log_prefix=a.name,
                   x_val=xte, y_val=yte)
    C.write_outputs(
        model, name=a.name, dataset=dataset, input_shape=shape, x_test=xte, y_test=yte,
        epochs=a.epochs, seed=a.seed, activation=f"{a.act}: {C.ACTIVATIONS[a.act][0]}",
        architecture=arch,
        notes=("L1-norm filter pruning by `henn prune` from %s, then %d epochs of fine-tuning "
               "(AdamW, one-cycle LR max %g, the family's augmentation). Accuracy before "
               "fine-tuning: %.4f." % (a.model, a.epochs, a.lr, before)),
        train_time_s=secs,
        command="python python/finetune_pruned.py %s --family %s --act %s --epochs %d --name %s"
                % (a.model, a.family, a.act, a.epochs, a.name),
        extra={"pruned_from": a.model, "accuracy_before_finetune": before})


if __name__ == "__main__":
    sys.exit(main())
