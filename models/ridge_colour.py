#!/usr/bin/env python3
"""Ridge regression on colour features: a dependency-light model (numpy + pyarrow) run by a
galaxy-pipe `command` stage.

Reads the `crop` stage's crops.parquet, describes each crop by the mean colour and the colour
histogram of concentric rings, fits a ridge regression on the training split (closed form), and
writes, into the output folder:
  predictions.parquet  GalaxyID + the 37 Class columns for every validation and test galaxy
  metrics.json         {"rmse": <validation RMSE>} (shown by `galaxy-pipe runs` and `compare`)
"""

import argparse
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def features(pixels, size, rings, bins):
    """Per crop: for each of `rings` concentric rings, the mean of R, G, B and a `bins`-bin
    histogram of brightness (fractions)."""
    images = pixels.reshape(-1, size, size, 3).astype(np.float32) / 255.0
    yy, xx = np.mgrid[0:size, 0:size]
    radius = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2) / (size / 2)
    edges = np.linspace(0.0, 1.0, rings + 1)
    columns = []
    for r in range(rings):
        mask = (radius >= edges[r]) & (radius < edges[r + 1])
        ring = images[:, mask, :]  # (n, pixels in ring, 3)
        columns.append(ring.mean(axis=1))
        brightness = ring.mean(axis=2)
        hist = np.stack(
            [((brightness >= lo) & (brightness < lo + 1.0 / bins)).mean(axis=1)
             for lo in np.linspace(0.0, 1.0, bins, endpoint=False)],
            axis=1,
        )
        columns.append(hist)
    x = np.concatenate(columns, axis=1)
    return np.concatenate([x, np.ones((len(x), 1), np.float32)], axis=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--rings", type=int, default=4)
    ap.add_argument("--bins", type=int, default=8)
    args = ap.parse_args()

    table = pq.read_table(args.crops)
    classes = [c for c in table.column_names if c.startswith("Class")]
    ids = table.column("GalaxyID").to_numpy().astype(np.int64)
    split = np.array(table.column("split").to_pylist())
    raw = table.column("pixels").to_pylist()
    size = int(round((len(raw[0]) / 3) ** 0.5))
    pixels = np.frombuffer(b"".join(raw), dtype=np.uint8)
    x = features(pixels, size, args.rings, args.bins)

    train = split == "train"
    y = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in classes], axis=1)
    xt, yt = x[train].astype(np.float64), y[train].astype(np.float64)
    weights = np.linalg.solve(xt.T @ xt + args.alpha * np.eye(x.shape[1]), xt.T @ yt)
    predicted = np.clip(x.astype(np.float64) @ weights, 0.0, 1.0)

    out_rows = (split == "valid") | (split == "test")
    columns = {"GalaxyID": pa.array(ids[out_rows], pa.int64())}
    for j, c in enumerate(classes):
        columns[c] = pa.array(predicted[out_rows, j], pa.float64())
    pq.write_table(pa.table(columns), os.path.join(args.out, "predictions.parquet"))

    valid = split == "valid"
    metrics = {}
    if valid.any():
        err = predicted[valid] - y[valid].astype(np.float64)
        metrics["rmse"] = float(np.sqrt(np.mean(err ** 2)))
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    print(f"ridge on {x.shape[1]} colour features, {train.sum()} training galaxies: "
          f"validation RMSE {metrics.get('rmse', float('nan')):.5f}")


if __name__ == "__main__":
    main()
