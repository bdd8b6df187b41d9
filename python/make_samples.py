"""Write the first 16 MNIST test images as 8-bit binary PGM files into models/samples/.

    python python/make_samples.py

Files: mnist_test_<index:04d>_label<label>.pgm (P5, 28x28, maxval 255, raw test-set bytes,
row-major, first row first) and labels.json.
"""

import json

import common as C


def main(n: int = 16):
    x, y = C.load_mnist("test")
    C.SAMPLES.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        img = x[i, 0].numpy()
        name = f"mnist_test_{i:04d}_label{int(y[i])}.pgm"
        with open(C.SAMPLES / name, "wb") as f:
            f.write(b"P5\n28 28\n255\n")
            f.write(img.tobytes())
        files.append({"file": name, "index": i, "label": int(y[i])})
    meta = {"dataset": "mnist", "split": "test", "first": n,
            "format": "binary PGM (P5), 28x28, maxval 255; model input = byte / 255",
            "labels": [int(v) for v in y[:n].tolist()], "files": files}
    with open(C.SAMPLES / "labels.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"wrote {n} samples to {C.SAMPLES}")


if __name__ == "__main__":
    main()
