"""Small residual network for MNIST with square activations (mnist_resnet10).

conv3x3 p1 1->16 (28x28) -> square
block(16->32): conv3x3 s2 p1 -> square -> conv3x3 p1, skip conv1x1 s2, add   (28 -> 14)
block(32->64): same                                                          (14 -> 7)
sum pooling 7x7 -> FC 64->10.  Convolutions with bias, no BatchNorm.

Sum pooling is written as GlobalAveragePool followed by Mul with a scalar initializer 49.0
(see python/README.md). Inputs bytes/255, shape [1,1,28,28].

    python python/train_mnist_resnet10.py [--epochs N]
"""

import argparse
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import common as C


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.act = C.Square()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, stride=2)

    def forward(self, x):
        return self.conv2(self.act(self.conv1(x))) + self.skip(x)


class ResNet10(nn.Module):
    def __init__(self, init_scale: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.act = C.Square()
        self.block1 = Block(16, 32)
        self.block2 = Block(32, 64)
        self.register_buffer("pool_scale", torch.tensor(49.0))
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(64, 10)
        if init_scale != 1.0:
            with torch.no_grad():
                for m in self.modules():
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        m.weight.mul_(init_scale)

    def forward(self, x):
        x = self.act(self.conv(x))
        x = self.block2(self.block1(x))
        x = F.adaptive_avg_pool2d(x, 1) * self.pool_scale  # sum pooling over 7x7
        return self.fc(self.flatten(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--init-scale", type=float, default=1.0)
    C.add_affine_args(ap, rot=10.0, scale=0.1, shift=0.08, clean_last=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    C.setup(a.seed)
    name = "mnist_resnet10"
    xtr, ytr = C.load_mnist("train")
    xte, yte = C.load_mnist("test")
    model = ResNet10(a.init_scale)
    secs = C.train(model, xtr, ytr, epochs=a.epochs, lr=a.lr, batch_size=128, seed=a.seed,
                   augment=C.affine_from_args(a),
                   clip=1.0, log_prefix=name, x_val=xte, y_val=yte, clean_last=a.clean_last)
    C.write_outputs(
        model, name=name, dataset="mnist", input_shape=[1, 1, 28, 28], x_test=xte, y_test=yte,
        epochs=a.epochs, seed=a.seed, activation="square: x*x",
        architecture=("conv3x3 p1 1->16, square, [conv3x3 s2 p1 16->32, square, conv3x3 p1 32->32] "
                      "+ conv1x1 s2 16->32, [conv3x3 s2 p1 32->64, square, conv3x3 p1 64->64] + "
                      "conv1x1 s2 32->64, sum pool 7x7 (GlobalAveragePool * 49), FC 64->10"),
        notes=("No BatchNorm (as in the reference). Conv/FC weights scaled by %g after default "
               "init; AdamW (wd 1e-4), batch 128, one-cycle LR max %g, grad-norm clip 1.0, "
               "augmentation (rotation +-%g deg, scale %g-%g, translation +-%g of the image size) in "
               "all but the last %d epochs, which train on the clean images. Sum pooling exported as "
               "GlobalAveragePool followed by Mul with scalar initializer pool_scale = 49. "
               "test_accuracy in float64 on the full 10k MNIST test set (also used for per-epoch "
               "monitoring); last epoch kept."
               % (a.init_scale, a.lr, a.rot, 1 - a.scale, 1 + a.scale, a.shift, a.clean_last)),
        train_time_s=secs,
        command="python python/train_mnist_resnet10.py --epochs %d --lr %g --rot %g --scale %g --shift %g "
                "--clean-last %d" % (a.epochs, a.lr, a.rot, a.scale, a.shift, a.clean_last))


if __name__ == "__main__":
    sys.exit(main())
