#!/usr/bin/env python3
"""PyTorch baselines for bench/gpu.sh: GRPO, DAPO and GSPO losses on padded [B, T] tensors with a
mask, forward + backward (d loss / d logp), eager and torch.compile, f32 and bf16 inputs.

The formulas follow stdlib/{grpo,dapo,gspo}.rlo with their default parameters (verl/TRL
conventions): group-normalised advantages over groups of 8, PPO clip (DAPO: clip-higher 0.2/0.28
and dual clip c=3, token mean over the batch), GRPO with the k3 KL (beta 0.04), GSPO's sequence
ratio exp(mean_t(logp - old_logp)) clipped to [1 - 3e-4, 1 + 4e-4].

Prints one JSON object per line, like rlo-bench-cuda:
  {"kind":"torch","mode":"eager"|"compile","objective":...,"B":...,"T":...,"dtype":...,"ms":...}
"""
import json
import sys

import torch


def group_adv(reward, group, eps=1e-6):
    g = reward.view(-1, group)
    mean = g.mean(dim=1, keepdim=True)
    std = g.std(dim=1, keepdim=True)  # unbiased, like torch.std / verl
    return ((g - mean) / (std + eps)).view(-1)


def masked_seq_mean(x, mask):
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def grpo(logp, old, ref, reward, mask, group=8, eps=0.2, beta=0.04):
    adv = group_adv(reward, group)[:, None]
    ratio = torch.exp(torch.clamp(logp - old, max=20.0))
    surr = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv)
    d = torch.clamp(ref - logp, -20, 20)
    k3 = torch.exp(d) - d - 1
    per_tok = -surr + beta * k3
    return masked_seq_mean(per_tok, mask).mean()


def dapo(logp, old, ref, reward, mask, group=8, lo=0.2, hi=0.28, c=3.0):
    adv = group_adv(reward, group)[:, None]
    ratio = torch.exp(torch.clamp(logp - old, max=20.0))
    pg = torch.maximum(-ratio * adv, -torch.clamp(ratio, 1 - lo, 1 + hi) * adv)
    pg = torch.where(adv < 0, torch.minimum(pg, -adv * c), pg)
    return (pg * mask).sum() / mask.sum().clamp(min=1)


def gspo(logp, old, ref, reward, mask, group=8, lo=3e-4, hi=4e-4):
    adv = group_adv(reward, group)
    s = torch.exp(masked_seq_mean(logp - old, mask))
    per_seq = torch.maximum(-s * adv, -torch.clamp(s, 1 - lo, 1 + hi) * adv)
    alive = (mask.sum(-1) > 0).float()
    return (per_seq * alive).sum() / alive.sum().clamp(min=1)


LOSSES = {"grpo": grpo, "dapo": dapo, "gspo": gspo}


def make_batch(b, t, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g, device="cuda")
    mask = (torch.arange(t, device="cuda")[None, :] < lengths[:, None]).float()
    logp = (-3 * torch.rand(b, t, generator=g, device="cuda")).to(dtype).requires_grad_(True)
    old = (-3 * torch.rand(b, t, generator=g, device="cuda")).to(dtype)
    ref = (-3 * torch.rand(b, t, generator=g, device="cuda")).to(dtype)
    reward = torch.rand(b, generator=g, device="cuda")
    return logp, old, ref, reward, mask


def time_ms(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main():
    shapes = [(1024, 4096), (4096, 8192)]
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    for name, loss_fn in LOSSES.items():
        compiled = torch.compile(loss_fn)
        for b, t in shapes:
            for dname, dtype in [("float", torch.float32), ("rlo_bf16", torch.bfloat16)]:
                logp, old, ref, reward, mask = make_batch(b, t, dtype)
                for mode, fn in [("eager", loss_fn), ("compile", compiled)]:
                    def step():
                        logp.grad = None
                        loss = fn(logp.float() if dtype != torch.float32 else logp,
                                  old.float(), ref.float(), reward, mask)
                        loss.backward()
                    try:
                        ms = time_ms(step, iters)
                    except Exception as e:  # report, keep going
                        print(json.dumps({"kind": "torch", "mode": mode, "objective": name,
                                          "B": b, "T": t, "dtype": dname, "error": str(e)}))
                        continue
                    print(json.dumps({"kind": "torch", "mode": mode, "objective": name,
                                      "B": b, "T": t, "dtype": dname, "ms": round(ms, 4)}),
                          flush=True)


if __name__ == "__main__":
    main()
