"""SEALion's MNIST networks, with and without its activity sparsifier (sealion_<net>[_l0]).

    dnn30:  flatten, FC 784->30, square, FC 30->10
    dnn100: flatten, FC 784->100, square, FC 100->10
    cnn16:  conv5x5 s2 p2 1->16 (28 -> 14), square, avgpool2 (14 -> 7), flatten,
            FC 784->100, square, FC 100->10   (16*14*14 + 100 = 3,236 activations, as SEALion's
            CNN-16; 400 + 78,400 + 1,000 = 79,800 weights besides biases, as its table)

Activity sparsification (`--l0 LAMBDA`): every group of activations gets a hard-concrete gate
(Louizos, Welling, Kingma, "Learning sparse neural networks through L0 regularization", ICLR
2018): a hidden unit of a fully connected layer, a whole channel of a convolution (196
activations). The gate multiplies the activation's output; training minimises cross-entropy +
LAMBDA * (expected number of open activations) / (number of activations), each gate weighted by
the activations it switches. At export the gates take their deterministic test-time value;
a closed gate (value 0) removes its unit or channel from the network (the rows of the layer
that computes it, the columns of the layer that reads it), an open gate is folded into the
columns of the next fully connected layer (avgpool and flatten are linear and per channel).
The exported network is dense and smaller: no mask is evaluated under encryption.

    python python/train_sealion.py --net dnn30 --epochs 30
    python python/train_sealion.py --net cnn16 --epochs 30 --l0 0.5
"""

import argparse
import math
import sys

import torch
import torch.nn as nn

import common as C

# hard-concrete stretch interval and temperature (the paper's values)
GAMMA, ZETA, BETA = -0.1, 1.1, 2.0 / 3.0


class HardConcreteGate(nn.Module):
    """One gate per unit of axis 1 (a hidden unit, or a channel of an NCHW value)."""

    def __init__(self, n: int, weight: int, init_open: float = 0.9):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((n,), math.log(init_open / (1 - init_open))))
        self.weight = weight  # activations switched by one gate

    def values(self) -> torch.Tensor:
        if self.training:
            u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((u.log() - (1 - u).log() + self.log_alpha) / BETA)
        else:
            s = torch.sigmoid(self.log_alpha)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def forward(self, x):
        z = self.values()
        return x * z.view(1, -1, *([1] * (x.dim() - 2)))

    def expected_open(self) -> torch.Tensor:
        """Expected number of open activations: P(gate != 0) times the gate's weight."""
        p = torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA))
        return p.sum() * self.weight


class Sealion(nn.Module):
    def __init__(self, net: str, gated: bool, c: int = 16, hidden: int | None = None):
        super().__init__()
        self.net = net
        self.square = C.make_act("square")
        if net == "cnn16":
            hidden = hidden or 100
            self.conv = nn.Conv2d(1, c, 5, stride=2, padding=2)
            self.pool = nn.AvgPool2d(2)
            self.flatten = nn.Flatten(1)
            self.fc1 = nn.Linear(c * 49, hidden)
            self.gate_conv = HardConcreteGate(c, 196) if gated else None
        else:
            hidden = hidden or int(net[3:])
            self.flatten = nn.Flatten(1)
            self.fc1 = nn.Linear(784, hidden)
            self.gate_conv = None
        self.fc2 = nn.Linear(hidden, 10)
        self.gate_fc = HardConcreteGate(hidden, 1) if gated else None

    def forward(self, x):
        if self.net == "cnn16":
            x = self.square(self.conv(x))
            if self.gate_conv is not None:
                x = self.gate_conv(x)
            x = self.pool(x)
        x = self.square(self.fc1(self.flatten(x)))
        if self.gate_fc is not None:
            x = self.gate_fc(x)
        return self.fc2(x)

    def gates(self) -> list[HardConcreteGate]:
        return [g for g in (self.gate_conv, self.gate_fc) if g is not None]

    def activations(self) -> int:
        """Activations (squares) per image."""
        n = self.fc1.out_features
        if self.net == "cnn16":
            n += self.conv.out_channels * 196
        return n


@torch.no_grad()
def export_plain(m: Sealion) -> Sealion:
    """The gated network without gates: closed units removed, open gates folded into the
    columns of the next fully connected layer."""
    out_c = m.conv.out_channels if m.net == "cnn16" else 0
    zc = m.gate_conv.eval().values() if m.gate_conv is not None else torch.ones(out_c)
    zf = m.gate_fc.eval().values() if m.gate_fc is not None else torch.ones(m.fc1.out_features)
    keep_c = torch.nonzero(zc > 0).flatten() if m.net == "cnn16" else None
    keep_f = torch.nonzero(zf > 0).flatten()
    if len(keep_f) == 0 or (keep_c is not None and len(keep_c) == 0):
        raise SystemExit("every gate of a layer closed: lower --l0")
    p = Sealion(m.net, False, c=len(keep_c) if keep_c is not None else 16, hidden=len(keep_f))
    w1 = m.fc1.weight
    if m.net == "cnn16":
        p.conv.weight.copy_(m.conv.weight[keep_c])
        p.conv.bias.copy_(m.conv.bias[keep_c])
        # fc1 input j = c * 49 + pixel: keep the kept channels' columns, scaled by their gate
        cols = (keep_c.view(-1, 1) * 49 + torch.arange(49).view(1, -1)).flatten()
        scale = zc[keep_c].repeat_interleave(49)
        w1 = w1[:, cols] * scale.view(1, -1)
    p.fc1.weight.copy_(w1[keep_f])
    p.fc1.bias.copy_(m.fc1.bias[keep_f])
    p.fc2.weight.copy_(m.fc2.weight[:, keep_f] * zf[keep_f].view(1, -1))
    p.fc2.bias.copy_(m.fc2.bias)
    return p


def describe(m: Sealion) -> str:
    if m.net == "cnn16":
        c, h = m.conv.out_channels, m.fc1.out_features
        return ("conv5x5 s2 p2 1->%d, square, avgpool2, flatten, FC %d->%d, square, FC %d->10"
                % (c, c * 49, h, h))
    h = m.fc1.out_features
    return "flatten, FC 784->%d, square, FC %d->10" % (h, h)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", choices=["dnn30", "dnn100", "cnn16"], required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--l0", type=float, default=0.0,
                    help="weight of the L0 activity penalty (0: no gates)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    C.setup(a.seed)
    gated = a.l0 > 0
    name = "sealion_%s%s" % (a.net, "_l0" if gated else "")
    xtr, ytr = C.load_mnist("train")
    xte, yte = C.load_mnist("test")
    model = Sealion(a.net, gated)
    total = model.activations()

    def penalty():
        return a.l0 * sum(g.expected_open() for g in model.gates()) / total

    def note():
        if not gated:
            return ""
        with torch.no_grad():
            opened = [int((g.eval().values() > 0).sum()) for g in model.gates()]
            model.train()
            exp = float(sum(g.expected_open() for g in model.gates()))
        return "open gates %s, expected open activations %.0f of %d" % (opened, exp, total)

    secs = C.train(model, xtr, ytr, epochs=a.epochs, lr=a.lr, batch_size=128, seed=a.seed,
                   weight_decay=1e-4, clip=1.0, log_prefix=name, x_val=xte, y_val=yte,
                   regularizer=penalty if gated else None, epoch_note=note)
    gated_acc = C.evaluate(model, xte, yte, torch.float64)[0]
    plain = export_plain(model) if gated else model
    kept = plain.activations()
    print("%s: activations %d -> %d; gated model %.4f" % (name, total, kept, gated_acc))
    notes = ("AdamW (wd 1e-4), batch 128, one-cycle LR max %g, grad-norm clip 1.0, no "
             "augmentation; square activations, no BatchNorm (SEALion's networks). "
             % a.lr)
    if gated:
        notes += ("Activity sparsifier: hard-concrete L0 gates (beta 2/3, gamma -0.1, zeta 1.1) "
                  "on every hidden unit%s, penalty %g x expected open activations / %d; closed "
                  "units removed and open gates folded into the next layer at export "
                  "(accuracy of the gated network before export, float64: %.4f)."
                  % (" and every convolution channel (196 activations each)"
                     if a.net == "cnn16" else "", a.l0, total, gated_acc))
    C.write_outputs(
        plain, name=name, dataset="mnist", input_shape=[1, 1, 28, 28], x_test=xte, y_test=yte,
        epochs=a.epochs, seed=a.seed, activation="square: x*x", architecture=describe(plain),
        notes=notes, train_time_s=secs,
        command="python python/train_sealion.py --net %s --epochs %d%s"
                % (a.net, a.epochs, " --l0 %g" % a.l0 if gated else ""),
        extra={"activations": kept, "activations_dense": total, "l0_penalty": a.l0})


if __name__ == "__main__":
    sys.exit(main())
