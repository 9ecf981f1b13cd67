"""The seed network of pipelines/full.toml, trained in PyTorch on random 64x64 batches: the
baseline `galaxy-pipe bench --only train` compares against (not run by CI).

conv 64@9x9 -> ReLU -> max-pool 2 -> conv 96@5x5 -> batch norm -> ReLU -> max-pool 2 ->
dense 128 -> ReLU -> dropout 0.15 -> dense 256 -> ReLU -> dropout 0.15 -> dense 37 -> sigmoid;
Adam (lr 1e-3), weighted MSE, batch 64. Prints one JSON line: images/s, CPU use (user / wall).

    python3 benchmarks/pytorch_train.py [--threads 2] [--batches 40] [--warmup 5]
"""

import argparse
import json
import os
import resource
import time

import torch
from torch import nn


def seed_network() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 9), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 96, 5), nn.BatchNorm2d(96), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(96 * 12 * 12, 128), nn.ReLU(), nn.Dropout(0.15),
        nn.Linear(128, 256), nn.ReLU(), nn.Dropout(0.15),
        nn.Linear(256, 37), nn.Sigmoid(),
    )


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    net = seed_network()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    weights = torch.rand(37) + 0.5
    n = args.batch_size
    batches = [(torch.rand(n, 3, 64, 64), torch.rand(n, 37)) for _ in range(8)]

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss = (weights * (net(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()

    net.train()
    for i in range(args.warmup):
        step(i)
    wall, cpu = time.perf_counter(), cpu_seconds()
    for i in range(args.batches):
        step(i)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(json.dumps({
        "images_per_sec": args.batches * n / wall,
        "cpu_use": cpu / wall,
        "threads": args.threads,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
