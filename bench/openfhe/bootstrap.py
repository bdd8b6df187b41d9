"""OpenFHE's CKKS bootstrap, timed the way `henn bench ckks --preset boot` times henn's.

N = 2^16, 32768 slots, HEStd_128_classic, sparse-encapsulated secret, level budget {3, 3},
scale 2^50, first modulus 51 bits, 8 levels left after (FLEXIBLEAUTO). Threads: OMP_NUM_THREADS.

    python3.10 -m venv .venv && .venv/bin/pip install openfhe==1.6.1.0.22.4
    OMP_NUM_THREADS=2 .venv/bin/python bench/openfhe/bootstrap.py [--precise] [--iters 3]

`--precise`: scale 2^59, first modulus 60 bits, 4 levels after. Prints one JSON object.
"""

import argparse
import json
import math
import os
import random
import resource
import statistics
import time

import openfhe as o


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--precise", action="store_true")
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    scale_bits, first_bits, levels_after = (59, 60, 4) if args.precise else (50, 51, 8)
    budget = [3, 3]
    dist = o.SecretKeyDist.SPARSE_ENCAPSULATED
    p = o.CCParamsCKKSRNS()
    p.SetSecretKeyDist(dist)
    p.SetSecurityLevel(o.SecurityLevel.HEStd_128_classic)
    p.SetRingDim(1 << 16)
    p.SetScalingModSize(scale_bits)
    p.SetFirstModSize(first_bits)
    p.SetScalingTechnique(o.ScalingTechnique.FLEXIBLEAUTO)
    depth = levels_after + o.CryptoContext.GetBootstrapDepth(budget, dist)
    p.SetMultiplicativeDepth(depth)
    cc = o.GenCryptoContext(p)
    for f in (o.PKESchemeFeature.PKE, o.PKESchemeFeature.KEYSWITCH, o.PKESchemeFeature.LEVELEDSHE,
              o.PKESchemeFeature.ADVANCEDSHE, o.PKESchemeFeature.FHE):
        cc.Enable(f)
    slots = 1 << 15
    t = time.time()
    cc.EvalBootstrapSetup(budget, [0, 0], slots)
    setup_s = time.time() - t
    t = time.time()
    keys = cc.KeyGen()
    cc.EvalMultKeyGen(keys.secretKey)
    cc.EvalBootstrapKeyGen(keys.secretKey, slots)
    keygen_s = time.time() - t
    rng = random.Random(1)
    x = [rng.uniform(-1.0, 1.0) for _ in range(slots)]
    pt = cc.MakeCKKSPackedPlaintext(x, 1, depth - 1, None, slots)
    ct = cc.Encrypt(keys.publicKey, pt)
    times = []
    out = cc.EvalBootstrap(ct)  # warm-up
    for _ in range(args.iters):
        t = time.time()
        out = cc.EvalBootstrap(ct)
        times.append(time.time() - t)
    res = cc.Decrypt(out, keys.secretKey)
    res.SetLength(slots)
    vals = res.GetRealPackedValue()
    errs = [abs(a - b) for a, b in zip(vals, x)]
    print(json.dumps({
        "op": "bootstrap", "impl": "openfhe 1.6.1", "threads": int(os.environ.get("OMP_NUM_THREADS", "0")),
        "median_s": statistics.median(times), "iters": args.iters,
        "precision_mean_bits": -math.log2(sum(errs) / len(errs)),
        "precision_min_bits": -math.log2(max(errs)),
        "levels_after": depth - out.GetLevel(),
        "scale_bits": scale_bits, "first_mod_bits": first_bits, "depth": depth,
        "ring_dim": cc.GetRingDimension(), "log2_modulus": math.log2(cc.GetModulus()),
        "setup_s": setup_s, "keygen_s": keygen_s,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20),
    }))


if __name__ == "__main__":
    main()
