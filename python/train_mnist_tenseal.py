"""TenSEAL-tutorial-style MNIST network (mnist_tenseal).

conv 7x7 stride 3 1->4 (28 -> 8, 4*8*8 = 256) -> square -> flatten -> FC 256->64 -> square
-> FC 64->10. No BatchNorm. Inputs bytes/255, shape [1,1,28,28].

    python python/train_mnist_tenseal.py [--epochs N]
"""

import argparse
import sys

import torch.nn as nn

import common as C


class TenSEALNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 7, stride=3)
        self.act1 = C.Square()
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(256, 64)
        self.act2 = C.Square()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.flatten(self.act1(self.conv(x)))
        return self.fc2(self.act2(self.fc1(x)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    C.setup(a.seed)
    name = "mnist_tenseal"
    xtr, ytr = C.load_mnist("train")
    xte, yte = C.load_mnist("test")
    model = TenSEALNet()
    secs = C.train(model, xtr, ytr, epochs=a.epochs, lr=a.lr, batch_size=128, seed=a.seed,
                   augment=lambda x, g: C.affine_augment(x, g, 10.0, (0.9, 1.1)),
                   clip=1.0, log_prefix=name, x_val=xte, y_val=yte)
    C.write_outputs(
        model, name=name, dataset="mnist", input_shape=[1, 1, 28, 28], x_test=xte, y_test=yte,
        epochs=a.epochs, seed=a.seed, activation="square: x*x",
        architecture="conv7x7 s3 1->4, square, flatten, FC 256->64, square, FC 64->10",
        notes=("AdamW (wd 1e-4), batch 128, one-cycle LR max %g, grad-norm clip 1.0, light "
               "augmentation (rotation +-10 deg, scale 0.9-1.1). test_accuracy in float64 on the "
               "full 10k MNIST test set; last epoch kept." % a.lr),
        train_time_s=secs, command="python python/train_mnist_tenseal.py --epochs %d" % a.epochs)


if __name__ == "__main__":
    sys.exit(main())
