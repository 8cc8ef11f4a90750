#!/usr/bin/env python3
"""PyTorch reference for crates/ops/examples/opbench.rs: conv(3x3, pad 1)+bias+ReLU forward and
backward, and 2x2 max-pool, at VGG19 96x96 layer shapes, on 2 threads.

    PYTHON scripts/bench_torch_ops.py [--batch 32] [--reps 3] [--cpu]

`--cpu` reports process CPU time / threads instead of wall time (as opbench's --cpu).
"""
import argparse
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=32)
p.add_argument("--reps", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--cpu", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
clock = (lambda: time.process_time() / a.threads) if a.cpu else time.perf_counter


def best_of(reps, f):
    best = float("inf")
    for _ in range(reps):
        t = clock()
        f()
        best = min(best, clock() - t)
    return best * 1e3


print(f"torch {torch.__version__}, batch {a.batch}, {torch.get_num_threads()} threads, best of {a.reps}")
print(f"{'layer':<22} {'GFLOP':>7} | {'fwd':>9} {'GF/s':>7} | {'bwd':>9} {'GF/s':>7}")
shapes = [
    ("conv1_1 96x96 3->64", 96, 3, 64),
    ("conv1_2 96x96 64->64", 96, 64, 64),
    ("conv2_1 48x48 64->128", 48, 64, 128),
    ("conv2_2 48x48 128->128", 48, 128, 128),
    ("conv3_x 24x24 256->256", 24, 256, 256),
    ("conv4_x 12x12 512->512", 12, 512, 512),
    ("conv5_x 6x6 512->512", 6, 512, 512),
]
tf_sum = tb_sum = 0.0
for name, hw, cin, cout in shapes:
    x = torch.randn(a.batch, cin, hw, hw, requires_grad=(cin != 3))
    w = (torch.randn(cout, cin, 3, 3) * (2.0 / (9 * cin)) ** 0.5).requires_grad_()
    b = (torch.randn(cout) * 0.1).requires_grad_()
    gflop = 2.0 * a.batch * hw * hw * cout * cin * 9 / 1e9

    def fwd():
        with torch.no_grad():
            F.relu(F.conv2d(x, w, b, 1, 1))

    y = F.relu(F.conv2d(x, w, b, 1, 1))
    g = torch.ones_like(y)
    y.backward(g)  # warm-up
    fwd()
    tf = best_of(a.reps, fwd)

    def bwd():
        yy = F.relu(F.conv2d(x, w, b, 1, 1))
        t = clock()
        yy.backward(g)
        return clock() - t

    tb = min(bwd() for _ in range(a.reps)) * 1e3
    tf_sum += tf
    tb_sum += tb
    print(f"{name:<22} {gflop:>7.1f} | {tf:>7.1f}ms {gflop / tf * 1e3:>7.1f} | {tb:>7.1f}ms {2 * gflop / tb * 1e3:>7.1f}")
print(f"{'sum (one of each)':<22} {'':>7} | {tf_sum:>7.1f}ms {'':>7} | {tb_sum:>7.1f}ms")

for name, hw, c in [("pool 96x96x64", 96, 64), ("pool 48x48x128", 48, 128), ("pool 24x24x256", 24, 256)]:
    x = torch.randn(a.batch, c, hw, hw, requires_grad=True)
    y = F.max_pool2d(x, 2)
    g = torch.ones_like(y)

    def fwd():
        with torch.no_grad():
            F.max_pool2d(x, 2)

    tf = best_of(a.reps, fwd)

    def bwd():
        yy = F.max_pool2d(x, 2)
        t = clock()
        yy.backward(g)
        return clock() - t

    tb = min(bwd() for _ in range(a.reps)) * 1e3
    print(f"{name:<22} fwd {tf:>6.1f}ms bwd {tb:>6.1f}ms")
