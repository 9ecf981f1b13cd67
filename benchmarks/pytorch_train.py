"""A galaxy-pipe network trained (or, with --inference, applied) in PyTorch on random batches:
the baseline `galaxy-pipe bench --only train` compares against (not run by CI).

Default: the seed network of pipelines/full.toml on 64x64 crops: conv 64@9x9 -> ReLU -> max-pool
2 -> conv 96@5x5 -> batch norm -> ReLU -> max-pool 2 -> dense 128 -> ReLU -> dropout 0.15 ->
dense 256 -> ReLU -> dropout 0.15 -> dense 37 -> sigmoid; Adam (lr 1e-3), weighted MSE, batch 64.
`--arch JSON` takes any network as galaxy-pipe writes it (`model.json`: input_size, conv, dense;
every output head is timed as a sigmoid, a rounding error next to the convolutions).
`--inference --tta` times prediction over the 8 rotations/flips of each image, batches of 256.
Prints one JSON line: images/s, CPU use (user + sys / wall).

    python3 benchmarks/pytorch_train.py [--threads 2] [--batches 40] [--arch JSON] [--inference --tta]
"""

import argparse
import json
import os
import resource
import time

import torch
from torch import nn


SEED = {
    "input_size": 64,
    "conv": [
        {"filters": 64, "kernel": 9, "padding": 0, "pool": 2, "batch_norm": False},
        {"filters": 96, "kernel": 5, "padding": 0, "pool": 2, "batch_norm": True},
    ],
    "dense": [{"units": 128, "dropout": 0.15}, {"units": 256, "dropout": 0.15}],
}


def network(arch: dict) -> nn.Module:
    layers, channels, side = [], 3, arch["input_size"]
    for c in arch["conv"]:
        layers.append(nn.Conv2d(channels, c["filters"], c["kernel"], padding=c["padding"]))
        if c.get("batch_norm"):
            layers.append(nn.BatchNorm2d(c["filters"]))
        layers.append(nn.ReLU())
        side = side + 2 * c["padding"] - c["kernel"] + 1
        if c["pool"] > 1:
            layers.append(nn.MaxPool2d(c["pool"]))
            side //= c["pool"]
        channels = c["filters"]
    layers.append(nn.Flatten())
    width = channels * side * side
    for d in arch["dense"]:
        layers += [nn.Linear(width, d["units"]), nn.ReLU(), nn.Dropout(d["dropout"])]
        width = d["units"]
    layers += [nn.Linear(width, 37), nn.Sigmoid()]
    return nn.Sequential(*layers)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--arch", type=json.loads, default=SEED)
    parser.add_argument("--inference", action="store_true")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    net = network(args.arch)
    side = args.arch["input_size"]
    n = 256 if args.inference else args.batch_size
    batches = [(torch.rand(n, 3, side, side), torch.rand(n, 37)) for _ in range(4)]
    step = predictor(net, args.tta) if args.inference else trainer(net)
    for i in range(args.warmup):
        step(*batches[i % len(batches)])
    wall, cpu = time.perf_counter(), cpu_seconds()
    for i in range(args.batches):
        step(*batches[i % len(batches)])
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(json.dumps({
        "images_per_sec": args.batches * n / wall,
        "cpu_use": cpu / wall,
        "threads": args.threads,
        "torch": torch.__version__,
    }))


def trainer(net: nn.Module):
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    weights = torch.rand(37) + 0.5
    net.train()

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss = (weights * (net(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()

    return step


def predictor(net: nn.Module, tta: bool):
    net.eval()

    @torch.no_grad()
    def step(x, _y):
        variants = [x]
        if tta:
            rotations = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
            variants = rotations + [torch.flip(r, dims=(3,)) for r in rotations]
        return sum(net(v) for v in variants) / len(variants)

    return step


if __name__ == "__main__":
    main()
