#!/usr/bin/env python3
"""PyTorch anchors for the GPU benchmark (bench/gpu.js): the same ops, shapes and byte counts, timed with
CUDA events in PyTorch eager and (where asked) torch.compile, printed as a table with the same row names,
so that one GPU call can put both side by side. Optional: needs a GPU and PyTorch; nothing of the package.

    python3 bench/anchors.py                       # eager at every shape, torch.compile at V = 128256 bf16
    python3 bench/anchors.py --compile all         # torch.compile everywhere (minutes of compilation)
    python3 bench/anchors.py --compile none

Each op is what a PyTorch trainer writes for it: log_softmax + gather, F.cross_entropy forward + backward,
the clipped PPO loss from logits with the k3 KL, KL(p‖q) wrt the q logits, the K-wise reward loss, and the
GAE recursion as a reversed loop over time (the way TRL and OpenRLHF compute it).
"""
import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

ITERATIONS = 10
N = 8192
K = 4
T = 2048
ES = {torch.bfloat16: 2, torch.float32: 4}


def log_probs(z, y):
    return torch.log_softmax(z.float(), -1).gather(-1, y[:, None])[:, 0]


def cross_entropy(z, y):
    z = z.detach().requires_grad_(True)
    loss = F.cross_entropy(z.float(), y)
    loss.backward()
    return z.grad


def ppo_loss(z, y, old_logp, adv):
    z = z.detach().requires_grad_(True)
    logp = torch.log_softmax(z.float(), -1).gather(-1, y[:, None])[:, 0]
    ratio = torch.exp(logp - old_logp)
    loss = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    delta = (old_logp - logp).clamp(-20, 20)
    loss = loss + 0.0 * (torch.exp(delta) - delta - 1).mean()  # the k3 estimator at beta = 0, as bench/gpu.js
    loss.backward()
    return z.grad


def kl_wrt_q(p, q):
    q = q.detach().requires_grad_(True)
    kl = F.kl_div(torch.log_softmax(q.float(), -1), torch.log_softmax(p.float(), -1), log_target=True, reduction='batchmean')
    kl.backward()
    return q.grad


def reward_loss(scores, chosen):
    s = scores.detach().requires_grad_(True)
    loss = -torch.log_softmax(s.view(-1, K), -1).gather(-1, chosen[:, None]).mean()
    loss.backward()
    return s.grad


def gae(rewards, values, gamma=0.99, lam=0.95):
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        nxt = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        last = rewards[:, t] + gamma * nxt - values[:, t] + gamma * lam * last
        adv[:, t] = last
    return adv, adv + values


def time_ms(fn, args, iterations=ITERATIONS):
    for _ in range(2):
        fn(*args)
    torch.cuda.synchronize()
    times = []
    for _ in range(iterations):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def copy_bandwidth():
    a = torch.empty(1 << 30, dtype=torch.uint8, device='cuda')
    b = torch.empty_like(a)
    b.copy_(a)
    ms = time_ms(lambda: b.copy_(a), (), 20)
    return 2 * a.numel() / (ms * 1e-3) / 1e9


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--compile', default='design', choices=['design', 'all', 'none'])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit(f'anchors: PyTorch {torch.__version__} sees no CUDA device; the anchors run on the GPU machine')
    g = torch.Generator(device='cuda').manual_seed(0)
    copy = copy_bandwidth()
    rows = []

    def add(op, shape, dtype, fn, fargs, nbytes, compile_it):
        row = {'op': op, 'shape': shape, 'dtype': str(dtype).replace('torch.', ''), 'MB': round(nbytes / 1e6, 1)}
        for label, f in [('eager', fn)] + ([('torch.compile', torch.compile(fn))] if compile_it else []):
            try:
                ms = time_ms(f, fargs)
                row[f'{label} ms'] = round(ms, 4)
                row[f'{label} % copy'] = round(100 * nbytes / (ms * 1e-3) / 1e9 / copy, 1)
            except Exception as e:  # one row failing does not stop the others
                row[f'{label} ms'] = f'error: {str(e).splitlines()[0][:60]}'
            torch.cuda.empty_cache()
        rows.append(row)

    for V in [32000, 128256, 152064, 262144]:
        for dtype in [torch.bfloat16, torch.float32]:
            es = ES[dtype]
            compile_it = args.compile == 'all' or (args.compile == 'design' and V == 128256 and dtype == torch.bfloat16)
            z = (torch.randn(N, V, device='cuda', generator=g) * 2).to(dtype)
            q = (torch.randn(N, V, device='cuda', generator=g) * 2).to(dtype)
            y = torch.randint(0, V, (N,), device='cuda', generator=g)
            old = log_probs(z, y) + 0.1 * torch.randn(N, device='cuda', generator=g)
            adv = torch.randn(N, device='cuda', generator=g)
            shape = f'{N}×{V}'
            add('logProbs', shape, dtype, log_probs, (z, y), N * V * es, compile_it)
            add('crossEntropy', shape, dtype, cross_entropy, (z, y), N * V * (es + 4), compile_it)
            add('ppoLoss', shape, dtype, ppo_loss, (z, y, old, adv), N * V * (es + 4), compile_it)
            add('klDivergence', shape, dtype, kl_wrt_q, (z, q), N * V * (2 * es + 4), compile_it)
            del z, q
            torch.cuda.empty_cache()
    for prompts in [1 << 20, 1 << 23]:
        scores = torch.randn(prompts * K, device='cuda', generator=g)
        chosen = torch.randint(0, K, (prompts,), device='cuda', generator=g)
        add('rewardLoss', f'{prompts}×{K}', torch.float32, reward_loss, (scores, chosen), prompts * K * 12 + prompts * 8, args.compile != 'none')
    for seqs in [512, 8192]:
        rewards = torch.randn(seqs, T, device='cuda', generator=g)
        values = torch.randn(seqs, T, device='cuda', generator=g)
        add('gae', f'{seqs}×{T}', torch.float32, gae, (rewards, values), seqs * T * 16, False)

    name = torch.cuda.get_device_name()
    print(f'PyTorch {torch.__version__} on {name}: device-to-device copy {copy:.0f} GB/s (read + write); {ITERATIONS} launches, CUDA events, median')
    columns = ['op', 'shape', 'dtype', 'MB', 'eager ms', 'eager % copy', 'torch.compile ms', 'torch.compile % copy']
    cells = [columns] + [[str(r.get(c, '—')) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for i, row in enumerate(cells):
        print('  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print('  '.join('─' * w for w in widths))


if __name__ == '__main__':
    main()
