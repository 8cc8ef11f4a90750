#!/usr/bin/env python3
"""PyTorch side of the whole-epoch cases of `pyramid-bench` (crates/bench/src/epoch.rs,
`cargo xtask bench --cases epoch-d16-bn --torch PYTHON`).

Runs ONE epoch case in this process and prints one JSON line on stdout, in the format of
`pyramid-bench --single epoch-...`:

    PYTHON scripts/bench_torch_epoch.py --single epoch-d16-bn/torch \
        [--threads 2] [--limit-batches N] [--data-root DIR]

Case = epoch-d{16|8}-{bn|nobn}: VGG19 of crates/models at width /16 or /8 on 1x32x32 input:
3x3 convs (pad 1, bias) each followed by BatchNorm2d (with `bn`) and ReLU, 2x2 max-pools after
conv1_2, conv2_2, conv3_4, conv4_4 and conv5_4; then flatten, Linear(512/N, 2048/N) ReLU
Dropout(0.5) Linear(2048/N, 512/N) ReLU Dropout(0.5) Linear(512/N, 10). Init as ours: with
batch norm torchvision's VGG init (Kaiming-normal fan_out convs, N(0, 0.01) linear layers, zero
biases, BN weight 1 bias 0); without batch norm `kaiming` (the same convs, PyTorch's default
linear layers), as configs/fashion-mnist-nobn.toml.

Data: the Fashion-MNIST IDX files (gzip, Debian's `dataset-fashion-mnist`), held in memory,
resized 28 -> 32 once (bilinear, align_corners=False, antialias=False, rounded to 0..255 like
our u8 resize) and normalised with mean 0.2860, std 0.3530. One epoch: a seeded shuffle, random
horizontal flip per image (p 0.5), batches of 128 (the last one partial), cross-entropy, Adam
(lr 1e-3; weight decay 5e-4 coupled with batch norm, none without, as the two configs),
zero_grad(set_to_none=True); then model.eval() under torch.no_grad() over the 10,000
test images at batch 500. Peak RSS = VmHWM of this process (includes the interpreter and
torch's libraries).
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench_proc import vmhwm_kib  # this script's folder is on sys.path

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
# VGG19's convs (paper widths) per block; a pool closes every block.
BLOCKS = [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]]


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(root, split):
    prefix = "train" if split == "train" else "t10k"
    paths = [os.path.join(root, f"{prefix}-{k}-idx{d}-ubyte.gz") for k, d in (("images", 3), ("labels", 1))]
    for p in paths:
        if not os.path.exists(p):
            raise SystemExit(
                f"bench_torch_epoch.py: {p} not found: install the Debian package "
                f"`dataset-fashion-mnist` (files in {DEFAULT_ROOT}) or pass --data-root"
            )
    x = torch.from_numpy(read_idx(paths[0]).copy()).float().unsqueeze(1)
    y = torch.from_numpy(read_idx(paths[1]).astype(np.int64))
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=False)
    x = x.round().clamp(0, 255)
    return ((x / 255.0 - MEAN) / STD).contiguous(), y


def build(div, bn, classes=10):
    layers, c_in = [], 1
    for block in BLOCKS:
        for c in block:
            c_out = c // div
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            if bn:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        layers.append(nn.MaxPool2d(2, 2))
    flat = 512 // div  # 1x1 after five pools of a 32x32 input
    model = nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(flat, 2048 // div), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(2048 // div, 512 // div), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(512 // div, classes),
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and bn:
            # torchvision's VGG init; without batch norm the linear layers keep PyTorch's default.
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--single", required=True, help="epoch-d{16|8}-{bn|nobn}/torch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit-batches", type=int, default=None)
    p.add_argument("--data-root", default=None)
    a = p.parse_args()
    name = a.single.split("/")[0]
    parts = name.split("-")
    if len(parts) != 3 or parts[0] != "epoch" or parts[1] not in ("d8", "d16") or parts[2] not in ("bn", "nobn"):
        raise SystemExit(f"bench_torch_epoch.py: bad case `{name}` (epoch-d16-bn, epoch-d8-nobn, ...)")
    div, bn = int(parts[1][1:]), parts[2] == "bn"
    limit = a.limit_batches if a.limit_batches else None
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    root = a.data_root or os.environ.get("PYRAMID_DATA") or DEFAULT_ROOT

    t0 = time.perf_counter()
    x_train, y_train = load(root, "train")
    x_test, y_test = load(root, "test")
    model = build(div, bn)
    # As the configs' recipes: Adam lr 1e-3; weight decay 5e-4 coupled (added to the gradient,
    # which is what torch.optim.Adam's weight_decay does) in configs/fashion-mnist.toml (the bn
    # cases), none in configs/fashion-mnist-nobn.toml.
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4 if bn else 0.0)
    loss_fn = nn.CrossEntropyLoss()
    setup_s = time.perf_counter() - t0

    c0 = time.process_time()
    t = time.perf_counter()
    model.train()
    n_train = len(y_train)
    order = torch.randperm(n_train)
    flips = torch.rand(n_train) < 0.5
    loss_sum, correct, n, batches = 0.0, 0, 0, 0
    for start in range(0, n_train, 128):
        if limit is not None and batches >= limit:
            break
        idx = order[start:start + 128]
        x = x_train[idx]
        f = flips[idx]
        x = torch.where(f[:, None, None, None], x.flip(3), x)
        y = y_train[idx]
        logits = model(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        v = loss.item()
        if not np.isfinite(v):
            raise SystemExit(f"bench_torch_epoch.py: loss became {v} at batch {batches}")
        b = len(idx)
        loss_sum += v * b
        correct += int((logits.argmax(1) == y).sum())
        n += b
        batches += 1
    train_s = time.perf_counter() - t

    t = time.perf_counter()
    model.eval()
    test_loss, test_correct, test_n = 0.0, 0, 0
    with torch.no_grad():
        for k, start in enumerate(range(0, len(y_test), 500)):
            if limit is not None and k >= limit:
                break
            x, y = x_test[start:start + 500], y_test[start:start + 500]
            logits = model(x)
            test_loss += float(loss_fn(logits, y)) * len(y)
            test_correct += int((logits.argmax(1) == y).sum())
            test_n += len(y)
    test_s = time.perf_counter() - t
    out = {
        "train_s": train_s, "test_s": test_s, "setup_s": setup_s,
        "train_images": n, "test_images": test_n, "batches": batches,
        "train_loss": loss_sum / max(n, 1), "train_acc": 100.0 * correct / max(n, 1),
        "test_loss": test_loss / max(test_n, 1), "test_acc": 100.0 * test_correct / max(test_n, 1),
        "cpu_s": time.process_time() - c0, "peak_rss_kib": vmhwm_kib(),
        "threads": a.threads, "version": f"torch {torch.__version__}",
    }
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
