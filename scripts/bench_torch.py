#!/usr/bin/env python3
"""PyTorch side of `pyramid-bench` (crates/bench, `cargo xtask bench --torch PYTHON`).

Runs ONE case in this process and prints its per-iteration timings as one JSON line on stdout,
in the format of `pyramid-bench --single`:

    PYTHON scripts/bench_torch.py --single vgg19/train/96/32/torch \
        [--iters 3] [--threads 2] [--device cpu|cuda]

Case = MODEL/KIND/SIZE/BATCH/BACKEND with MODEL vgg19 or svgg5, KIND train or infer.
The models are the ones of crates/models (no batch norm, 3x3 convs pad 1 + ReLU, 2x2 max-pools):
- VGG19: torchvision's vgg19().features, flatten, Linear(F, 2048) ReLU Dropout Linear(2048, 512)
  ReLU Dropout Linear(512, 10), F = 512 * (SIZE/32)^2 (4608 at 96x96, 512 at 32x32);
- SVGG5: conv1_1 | pool, conv 64->128, pool | conv 128->256, pool | conv 256->512, pool |
  conv 512->512, pool | Dropout, Linear(F, 10).
Training step = forward + cross-entropy, backward, Adam(lr 1e-4, weight_decay 5e-4) step (+
zero_grad(set_to_none=True)); inference = eval mode under torch.no_grad(). One warm-up iteration,
then --iters timed ones. Peak RSS = VmHWM of this process at the end (includes the Python
interpreter and torch's libraries, about 300 MiB of it before any tensor).
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn

from bench_proc import vmhwm_kib  # this script's folder is on sys.path


def conv(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]


def build(model, size, classes=10):
    flat = 512 * (size // 32) ** 2
    if model == "vgg19":
        from torchvision.models import vgg19

        features = vgg19(weights=None).features
        head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 2048), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(2048, 512), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(512, classes),
        )
        return nn.Sequential(features, head)
    if model == "svgg5":
        pool = lambda: nn.MaxPool2d(2, 2)  # noqa: E731
        return nn.Sequential(
            *conv(3, 64),                                  # C11
            pool(), *conv(64, 128), pool(),                # K12
            *conv(128, 256), pool(),                       # K3
            *conv(256, 512), pool(),                       # K4
            *conv(512, 512), pool(),                       # K5
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(flat, classes),  # FC1
        )
    raise SystemExit(f"bench_torch.py: unknown model `{model}` (vgg19 or svgg5)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--single", required=True, help="MODEL/train|infer/SIZE/BATCH/BACKEND")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    model_name, kind, size, batch, _backend = a.single.split("/")
    size, batch = int(size), int(batch)
    if kind not in ("train", "infer"):
        raise SystemExit(f"bench_torch.py: bad kind `{kind}`")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    model = build(model_name, size).to(dev)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-4)
    out = {"fwd_ms": [], "bwd_ms": [], "upd_ms": [], "cpu_ms": [], "threads": a.threads,
           "version": f"torch {torch.__version__}"}
    if kind == "train":
        model.train()
    else:
        model.eval()
    for it in range(a.iters + 1):
        c0 = time.process_time()
        if kind == "train":
            t = time.perf_counter()
            loss = loss_fn(model(x), y)
            sync()
            fwd = time.perf_counter() - t
            t = time.perf_counter()
            loss.backward()
            sync()
            bwd = time.perf_counter() - t
            t = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            upd = time.perf_counter() - t
            if not torch.isfinite(loss).item():
                raise SystemExit(f"bench_torch.py: loss is {loss.item()}")
            del loss
        else:
            t = time.perf_counter()
            with torch.no_grad():
                logits = model(x)
            sync()
            fwd = time.perf_counter() - t
            bwd = upd = None
            del logits
        if it > 0:
            out["fwd_ms"].append(fwd * 1e3)
            if bwd is not None:
                out["bwd_ms"].append(bwd * 1e3)
                out["upd_ms"].append(upd * 1e3)
            out["cpu_ms"].append((time.process_time() - c0) * 1e3)
    out["peak_rss_kib"] = vmhwm_kib()
    if cuda:
        out["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
