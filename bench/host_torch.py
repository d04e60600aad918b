# PyTorch CPU contender of the host benchmark (bench/host.js), one thread. Reads a job as JSON on stdin:
# { "op", "dir", "inputs": { name: [dtype, shape] }, "params", "minSamples", "maxTime", "cpuClock" }, the inputs as raw
# little-endian files dir/<name>.bin; writes each output array to dir/out_<name>.bin and prints
# { "version", "loss", "outputs": [names], "ms": [samples] } on stdout. The op runs once before timing.
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
job = json.load(sys.stdin)
d = job["dir"]
p = job["params"]
inp = {}
for name, (dtype, shape) in job["inputs"].items():
    inp[name] = torch.from_numpy(np.fromfile(f"{d}/{name}.bin", dtype=dtype).reshape(shape))
for name in ("targets", "chosen", "actions"):
    if name in inp:
        inp[name] = inp[name].long()


def leaf(x):
    return x.detach().requires_grad_(True)


def ce(x, y):
    return {"loss": F.cross_entropy(x, y)}


def ce_bwd(x, y):
    x = leaf(x)
    loss = F.cross_entropy(x, y)
    loss.backward()
    return {"loss": loss, "grad": x.grad}


def log_probs(x, y):
    lp = F.log_softmax(x, -1)
    return {"logp": lp.gather(1, y[:, None])[:, 0], "entropy": -(lp.exp() * lp).sum(-1)}


def kl(P, Q):
    Q = leaf(Q)
    lp, lq = F.log_softmax(P, -1), F.log_softmax(Q, -1)
    loss = (lp.exp() * (lp - lq)).sum(-1).mean()
    loss.backward()
    return {"loss": loss, "grad": Q.grad}


def clipped(logp, old, adv, mask):
    ratio = torch.exp(logp - old)
    per = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - p["clip"], 1 + p["clip"]))
    m = mask.bool()
    return per[m].sum() / m.sum()


def ppo(x, actions, old, adv, mask):
    x = leaf(x)
    logp = F.log_softmax(x, -1).gather(1, actions[:, None])[:, 0]
    loss = clipped(logp, old, adv, mask)
    loss.backward()
    return {"loss": loss, "grad": x.grad}


def policy(logp, old, adv, mask):
    logp = leaf(logp)
    loss = clipped(logp, old, adv, mask)
    loss.backward()
    return {"loss": loss, "grad": logp.grad}


def reward(scores, chosen):
    s = leaf(scores.view(-1, p["K"]))
    loss = F.cross_entropy(s, chosen)
    loss.backward()
    return {"loss": loss, "grad": s.grad}


def whiten(x):
    return {"values": (x - x.mean()) * torch.rsqrt(x.var() + p["eps"])}


def group(x):
    g = x.view(-1, p["G"])
    return {"values": ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + p["eps"])).view(-1)}


ops = {"ce": ce, "ce_bwd": ce_bwd, "log_probs": log_probs, "kl": kl, "ppo": ppo, "policy": policy,
       "reward": reward, "whiten": whiten, "group": group}
fn = ops[job["op"]]
args = [inp[n] for n in job["inputs"]]
out = fn(*args)
samples = []
clock = time.process_time if job.get("cpuClock") else time.perf_counter
t_end = time.perf_counter() + job["maxTime"]
while len(samples) < job["minSamples"] or time.perf_counter() < t_end:
    t0 = clock()
    fn(*args)
    samples.append((clock() - t0) * 1e3)
names = []
loss = None
for k, v in out.items():
    if k == "loss":
        loss = float(v)
        continue
    v.detach().float().contiguous().numpy().tofile(f"{d}/out_{k}.bin")
    names.append(k)
print(json.dumps({"version": torch.__version__, "loss": loss, "outputs": names, "ms": samples}))
