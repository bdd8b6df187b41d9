"""CNN for CIFAR-10 with polynomial activations.

Reference shape (cifar_cnn4_<act>, the 4-layer CNN of the reference paper, 94,986 parameters
with BN): conv3x3 p1 3->32 -> BN -> act -> avgpool2 -> conv3x3 p1 32->64 -> BN -> act ->
avgpool2 -> conv3x3 p1 64->128 -> BN -> act -> avgpool2 -> global average pool -> FC 128->10.

`--head fc2048` keeps the earlier shape (cifar_cnn4_fc2048_<act>): ... -> avgpool2 -> flatten
-> FC 2048->256 -> FC 256->10 (32 -> 16 -> 8 -> 4; 128*4*4 = 2048).

Inputs bytes/255, shape [1,3,32,32], channels R,G,B.

Training data: data/cifar10/*.bin, which in this project are JPEG-derived CIFAR-10 batches
(see ../shared/datasets/cifar10/README.md); accuracies are on the JPEG-derived test batch and
are not directly comparable with published CIFAR-10 figures.

    python python/train_cifar_cnn4.py --act square|swish2|swish4 [--epochs N] [--head gap|fc2048]
"""

import argparse
import sys

import torch.nn as nn

import common as C


class CNN4(nn.Module):
    def __init__(self, act: str, head: str = "gap", channels=(32, 64, 128)):
        super().__init__()
        layers = []
        cin = 3
        for cout in channels:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout, eps=C.BN_EPS),
                       C.make_act(act), nn.AvgPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        if head == "gap":
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                                      nn.Linear(channels[-1], 10))
        else:
            self.head = nn.Sequential(nn.Flatten(1), nn.Linear(2048, 256), nn.Linear(256, 10))

    def forward(self, x):
        return self.head(self.features(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--act", choices=sorted(C.ACTIVATIONS), required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head", choices=["gap", "fc2048"], default="gap")
    a = ap.parse_args()
    C.setup(a.seed)
    name = f"cifar_cnn4_{a.act}" if a.head == "gap" else f"cifar_cnn4_fc2048_{a.act}"
    xtr, ytr = C.load_cifar("train")
    xte, yte = C.load_cifar("test")
    model = CNN4(a.act, a.head)
    secs = C.train(model, xtr, ytr, epochs=a.epochs, lr=a.lr, batch_size=128, seed=a.seed,
                   weight_decay=5e-4,
                   augment=lambda x, g: C.affine_augment(x, g, 0.0, (1.0, 1.0), max_shift=0.125,
                                                         hflip=True),
                   clip=1.0, log_prefix=name, x_val=xte, y_val=yte)
    C.write_outputs(
        model, name=name, dataset="cifar10-jpeg", input_shape=[1, 3, 32, 32], x_test=xte,
        y_test=yte, epochs=a.epochs, seed=a.seed, activation=f"{a.act}: {C.ACTIVATIONS[a.act][0]}",
        architecture=("conv3x3 p1 3->32, BN, act, avgpool2, conv3x3 p1 32->64, BN, act, avgpool2, "
                      "conv3x3 p1 64->128, BN, act, avgpool2, "
                      + ("global average pool, FC 128->10 (the reference paper's shape)"
                         if a.head == "gap" else "flatten, FC 2048->256, FC 256->10")),
        notes=("Trained and evaluated on JPEG-derived CIFAR-10 (../shared/datasets/cifar10/jpeg, "
               "JPEG q75 4:2:0 re-encodings restored to the original record order; not "
               "byte-identical to CIFAR-10, reported to cost ~2-3 points): test_accuracy is on the "
               "JPEG-derived test batch (10k) and not directly comparable with published figures. "
               "AdamW (wd 5e-4), batch 128, one-cycle LR max %g, grad-norm clip 1.0, augmentation: "
               "random translation up to +-4 px (bilinear, zero fill) and horizontal flip. Only "
               "%d epochs on 2 CPU cores (time-limited). Inputs bytes/255, channels R,G,B, no "
               "normalisation; last epoch kept." % (a.lr, a.epochs)),
        train_time_s=secs,
        command="python python/train_cifar_cnn4.py --act %s --epochs %d --head %s" % (
            a.act, a.epochs, a.head))


if __name__ == "__main__":
    sys.exit(main())
