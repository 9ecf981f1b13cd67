#!/usr/bin/env python3
"""The seed experiment's CNN in PyTorch, run by a galaxy-pipe `command` stage
(pipelines/torch.toml) beside the Burn `train` stage and scored by the same `evaluate`.

Network (as pipelines/full.toml's `train`): conv 64@9x9 -> ReLU -> max-pool 2 -> conv 96@5x5 ->
batch norm -> ReLU -> max-pool 2 -> dense 128 -> ReLU -> dropout 0.15 -> dense 256 -> ReLU ->
dropout 0.15 -> dense 37 -> sigmoid; Adam, mean squared error, batches of 64, each batch rotated
by a random multiple of 90 degrees. Trains on the crops' training split; writes, into --out:
  predictions.parquet  GalaxyID + the 37 Class columns for every validation and test galaxy
  metrics.json         {"rmse": validation RMSE, "epochs": ..., "seconds": training time}
Deterministic for a given --seed and --threads (torch.use_deterministic_algorithms).
"""

import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn


def network(side: int) -> nn.Module:
    after = ((side - 8) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(3, 64, 9), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 96, 5), nn.BatchNorm2d(96), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(96 * after * after, 128), nn.ReLU(), nn.Dropout(0.15),
        nn.Linear(128, 256), nn.ReLU(), nn.Dropout(0.15),
        nn.Linear(256, 37), nn.Sigmoid(),
    )


def load(path):
    table = pq.read_table(path)
    classes = [c for c in table.column_names if c.startswith("Class")]
    raw = table.column("pixels").to_pylist()
    side = int(round((len(raw[0]) / 3) ** 0.5))
    pixels = np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(-1, side, side, 3)
    images = torch.from_numpy(pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    labels = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in classes], axis=1)
    split = np.array(table.column("split").to_pylist())
    ids = table.column("GalaxyID").to_numpy().astype(np.int64)
    return images, torch.from_numpy(np.nan_to_num(labels).astype(np.float32)), split, ids, classes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    images, labels, split, ids, classes = load(args.crops)
    train = np.flatnonzero(split == "train")
    net = network(images.shape[-1])
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        order = torch.from_numpy(train)[torch.randperm(len(train), generator=generator)]
        total = 0.0
        for b in range(0, len(order), 64):
            rows = order[b:b + 64]
            k = int(torch.randint(4, (1,), generator=generator))
            x = torch.rot90(images[rows], k, dims=(2, 3))
            optimizer.zero_grad(set_to_none=True)
            loss = ((net(x) - labels[rows]) ** 2).mean()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        print(f"epoch {epoch + 1}/{args.epochs}: training MSE {total / len(train):.5f}", flush=True)
    seconds = time.perf_counter() - start

    net.eval()
    wanted = np.flatnonzero((split == "valid") | (split == "test"))
    with torch.no_grad():
        predicted = torch.cat([net(images[wanted[b:b + 256]]) for b in range(0, len(wanted), 256)])
    predicted = predicted.double().clamp(0, 1).numpy()
    columns = {"GalaxyID": pa.array(ids[wanted], pa.int64())}
    for j, c in enumerate(classes):
        columns[c] = pa.array(predicted[:, j], pa.float64())
    pq.write_table(pa.table(columns), os.path.join(args.out, "predictions.parquet"))

    metrics = {"epochs": args.epochs, "seconds": seconds}
    valid = split[wanted] == "valid"
    if valid.any():
        truth = labels[wanted[valid]].double().numpy()
        metrics["rmse"] = float(np.sqrt(np.mean((predicted[valid] - truth) ** 2)))
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    print(f"validation RMSE {metrics.get('rmse', float('nan')):.5f} after {seconds:.0f}s", flush=True)


if __name__ == "__main__":
    main()
