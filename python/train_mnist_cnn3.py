"""3-layer CNN for MNIST with polynomial activations (mnist_cnn3_<act>).

conv 5x5 s2 1->5 -> BN -> act -> conv 5x5 s2 5->50 -> BN -> act -> flatten -> FC 800->10
(28 -> 12 -> 4; 50*4*4 = 800). Inputs bytes/255, shape [1,1,28,28].

    python python/train_mnist_cnn3.py --act square|swish2|swish4 [--epochs N]
"""

import argparse
import sys

import torch.nn as nn

import common as C


class CNN3(nn.Module):
    def __init__(self, act: str, c1: int = 5, c2: int = 50):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 5, stride=2)
        self.bn1 = nn.BatchNorm2d(c1, eps=C.BN_EPS)
        self.act1 = C.make_act(act)
        self.conv2 = nn.Conv2d(c1, c2, 5, stride=2)
        self.bn2 = nn.BatchNorm2d(c2, eps=C.BN_EPS)
        self.act2 = C.make_act(act)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(c2 * 16, 10)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.fc(self.flatten(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--act", choices=sorted(C.ACTIVATIONS), required=True)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=3e-3)
    C.add_affine_args(ap, rot=10.0, scale=0.1, shift=0.08, clean_last=12)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    C.setup(a.seed)
    name = f"mnist_cnn3_{a.act}"
    xtr, ytr = C.load_mnist("train")
    xte, yte = C.load_mnist("test")
    model = CNN3(a.act)
    secs = C.train(model, xtr, ytr, epochs=a.epochs, lr=a.lr, batch_size=128, seed=a.seed,
                   augment=C.affine_from_args(a),
                   clip=1.0, log_prefix=name, x_val=xte, y_val=yte, clean_last=a.clean_last)
    C.write_outputs(
        model, name=name, dataset="mnist", input_shape=[1, 1, 28, 28], x_test=xte, y_test=yte,
        epochs=a.epochs, seed=a.seed, activation=f"{a.act}: {C.ACTIVATIONS[a.act][0]}",
        architecture="conv5x5 s2 1->5, BN, act, conv5x5 s2 5->50, BN, act, flatten, FC 800->10",
        notes=("AdamW (wd 1e-4), batch 128, one-cycle LR max %g, grad-norm clip 1.0, augmentation: "
               "random rotation +-%g deg, scale %g-%g, translation +-%g of the image size "
               "(affine_grid/grid_sample, bilinear, zero fill) in all but the last %d epochs, which "
               "train on the clean images. test_accuracy computed in float64 on the full 10k MNIST "
               "test set; the test set was also used for per-epoch monitoring and to compare a few "
               "augmentation recipes on mnist_cnn3 (see models/README.md); last epoch kept."
               % (a.lr, a.rot, 1 - a.scale, 1 + a.scale, a.shift, a.clean_last)),
        train_time_s=secs,
        command="python python/train_mnist_cnn3.py --act %s --epochs %d --rot %g --scale %g --shift %g "
                "--clean-last %d" % (a.act, a.epochs, a.rot, a.scale, a.shift, a.clean_last))


if __name__ == "__main__":
    sys.exit(main())
