#!/usr/bin/env python3
"""PyTorch side of `pyramid-bench data` (crates/bench/src/data.rs, `cargo xtask bench data
--torch PYTHON`): torchvision's input pipeline over the same fixture files.

    PYTHON scripts/bench_torch_data.py --dataset stl10|cifar100 --dir D \
        [--batches 80] [--warmup 8] [--runs 3] [--workers 2] [--batch-size 128] [--seed 1]

Reads D/stl10_binary/train_{X,y}.bin or D/cifar-100-binary/train.bin with numpy exactly as
torchvision's STL10 / CIFAR100 classes lay them out (STL10: reshape (N, 3, 96, 96), then swap
the last two axes, because the file stores each channel column-major; CIFAR-100 binary records:
coarse label, fine label, 3072 bytes of R, G, B planes), and serves PIL images through the
paper's training transforms (docs/method.md §1, the same as `LoaderConfig::paper_train`):

    STL10:     RandomHorizontalFlip → ToTensor → Normalize(CIFAR mean, std)
    CIFAR-100: Resize(96, bilinear) → RandomHorizontalFlip → ToTensor → Normalize(CIFAR mean, std)

through DataLoader(batch_size=128, shuffle=True, num_workers=2, drop_last=False), all other
settings torch's defaults (fork start method, prefetch_factor 2, workers restarted every epoch).
Batches are drawn from consecutive epochs; after --warmup batches, each of --runs runs times
--batches batches. Prints one JSON line: per run images, seconds and CPU seconds (this process
plus its worker processes, live ones from /proc, exited ones from RUSAGE_CHILDREN), and the peak
RSS (VmHWM) of this process (workers are forked and share its pages, so they are not added).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from bench_proc import vmhwm_kib  # this script's folder is on sys.path

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    """CPU seconds of this process's children: live ones (and unreaped zombies) from
    /proc/PID/stat, reaped ones from getrusage(RUSAGE_CHILDREN)."""
    me = os.getpid()
    live = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # rest[0] = state (field 3), rest[1] = ppid, rest[11], rest[12] = utime, stime
        if int(rest[1]) == me:
            live += int(rest[11]) + int(rest[12])
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return live / CLK_TCK + r.ru_utime + r.ru_stime


def cpu_s():
    return time.process_time() + children_cpu_s()


class Stl10Train(Dataset):
    """torchvision.datasets.STL10's loading and __getitem__, without its checksum check (the
    fixture files are not the official ones)."""

    def __init__(self, root, transform):
        base = os.path.join(root, "stl10_binary")
        self.labels = np.fromfile(os.path.join(base, "train_y.bin"), dtype=np.uint8).astype(np.int64) - 1
        data = np.fromfile(os.path.join(base, "train_X.bin"), dtype=np.uint8)
        self.data = np.transpose(np.reshape(data, (-1, 3, 96, 96)), (0, 1, 3, 2))
        self.transform = transform

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, i):
        img, target = self.data[i], int(self.labels[i])
        img = Image.fromarray(np.transpose(img, (1, 2, 0)))
        return self.transform(img), target


class Cifar100BinTrain(Dataset):
    """torchvision.datasets.CIFAR100's layout (N, 32, 32, 3) and __getitem__, read from the
    binary version (torchvision reads the pickles; the pixels are the same)."""

    def __init__(self, root, transform):
        raw = np.fromfile(os.path.join(root, "cifar-100-binary", "train.bin"), dtype=np.uint8)
        raw = raw.reshape(-1, 2 + 3072)
        self.targets = raw[:, 1].astype(np.int64).tolist()
        self.data = raw[:, 2:].reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.transform = transform

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, i):
        img, target = self.data[i], self.targets[i]
        img = Image.fromarray(img)
        return self.transform(img), target


def make_dataset(name, root):
    norm = T.Normalize(CIFAR_MEAN, CIFAR_STD)
    if name == "stl10":
        tf = T.Compose([T.RandomHorizontalFlip(), T.ToTensor(), norm])
        return Stl10Train(root, tf)
    if name == "cifar100":
        tf = T.Compose([
            T.Resize(96, interpolation=T.InterpolationMode.BILINEAR),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            norm,
        ])
        return Cifar100BinTrain(root, tf)
    raise SystemExit(f"unknown dataset {name!r} (stl10 or cifar100)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--batches", type=int, default=80)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    ds = make_dataset(a.dataset, a.dir)
    loader = DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers, drop_last=False)

    def batches():
        while True:
            for b in loader:
                yield b

    gen = batches()
    shape = None
    for _ in range(a.warmup):
        x, _y = next(gen)
        shape = list(x.shape)
    runs = []
    for _ in range(a.runs):
        c0, t0, n = cpu_s(), time.perf_counter(), 0
        for _ in range(a.batches):
            x, _y = next(gen)
            n += x.shape[0]
        t, c = time.perf_counter() - t0, cpu_s() - c0
        runs.append({"images": n, "seconds": t, "cpu_seconds": c})
        shape = list(x.shape)
    gen.close()
    print(json.dumps({
        "dataset": a.dataset,
        "n": len(ds),
        "workers": a.workers,
        "batch_size": a.batch_size,
        "batch_shape": shape,
        "dtype": str(x.dtype).replace("torch.", ""),
        "runs": runs,
        "peak_rss_kib": vmhwm_kib(),
        "version": f"torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {Image.__version__}",
    }))


if __name__ == "__main__":
    sys.exit(main())
