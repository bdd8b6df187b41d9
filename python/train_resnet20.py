"""ResNet-20 for CIFAR-10 with ReLU (resnet20_cifar_relu): the subject of post-training
approximation (`henn approximate`), not HE-friendly as it is.

He et al. 2016, the CIFAR variant: conv3x3 3->16, BN, ReLU, then 3 stages of 3 basic blocks
(16, 32, 64 channels; the first block of stages 2 and 3 has stride 2) and global average
pooling + FC 64->10. A basic block is conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the
shortcut, then ReLU; a shortcut that changes shape is a 1x1 stride-2 convolution + BN (option
B), so that the graph holds only Conv, BatchNormalization, Relu, Add, GlobalAveragePool,
Flatten and Gemm. 19 convolutions + 1 FC = 20 layers (+ 2 projection shortcuts), 272,474
parameters with BN.

Inputs bytes/255, [1,3,32,32], channels R,G,B, no normalisation (the first BN sees the raw
scale). Data: the JPEG-derived CIFAR-10 batches (see train_cifar_cnn4.py).

    python python/train_resnet20.py --epochs N
"""

import argparse
import sys

import torch.nn as nn

import common as C


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=C.BN_EPS)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=C.BN_EPS)
        self.relu2 = nn.ReLU()
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout, eps=C.BN_EPS))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        s = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(y + s)


class ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16, eps=C.BN_EPS)
        self.relu = nn.ReLU()
        blocks = []
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for j in range(3):
                blocks.append(Block(cin, cout, stride if j == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.blocks(self.relu(self.bn(self.conv(x)))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    C.setup(a.seed)
    name = "resnet20_cifar_relu"
    xtr, ytr = C.load_cifar("train")
    xte, yte = C.load_cifar("test")
    model = ResNet20()
    secs = C.train(model, xtr, ytr, epochs=a.epochs, lr=a.lr, batch_size=128, seed=a.seed,
                   weight_decay=5e-4,
                   augment=lambda x, g: C.affine_augment(x, g, 0.0, (1.0, 1.0), max_shift=0.125,
                                                         hflip=True),
                   clip=None, log_prefix=name, x_val=xte, y_val=yte)
    C.write_outputs(
        model, name=name, dataset="cifar10-jpeg", input_shape=[1, 3, 32, 32], x_test=xte,
        y_test=yte, epochs=a.epochs, seed=a.seed, activation="relu: ReLU",
        architecture=("ResNet-20 (He et al.): conv3x3 3->16, BN, ReLU, 3 stages x 3 basic blocks "
                      "(16/32/64 channels, stride 2 at stages 2 and 3, 1x1 conv + BN projection "
                      "shortcuts), global average pool, FC 64->10"),
        notes=("Trained and evaluated on JPEG-derived CIFAR-10 (../shared/datasets/cifar10/jpeg; "
               "not byte-identical to CIFAR-10, reported to cost ~2-3 points): test_accuracy is on "
               "the JPEG-derived test batch and not directly comparable with published figures "
               "(ResNet-20: 91.25 %% in He et al. after 64k iterations = 164 epochs). AdamW (wd "
               "5e-4), batch 128, one-cycle LR max %g, no clipping, augmentation: random "
               "translation up to +-4 px and horizontal flip. Only %d epochs on a 2-core CPU "
               "(time-limited). Inputs bytes/255, no normalisation; last epoch kept."
               % (a.lr, a.epochs)),
        train_time_s=secs,
        command="python python/train_resnet20.py --epochs %d" % a.epochs)


if __name__ == "__main__":
    sys.exit(main())
