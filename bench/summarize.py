#!/usr/bin/env python3
"""Joins rlo-bench-cuda and torch_losses.py output (JSON lines) into one table with ratios."""
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def main():
    # argv: rlo.jsonl [torch.jsonl]; PyTorch columns are "-" without the second file
    rows = load(sys.argv[1]) + (load(sys.argv[2]) if len(sys.argv) > 2 else [])
    copy = [r for r in rows if r["kind"] == "copy"]
    if copy:
        print(f"device-to-device copy: {copy[0]['gbps']:.0f} GB/s ({copy[0]['device']})")
    torch = {(r["objective"], r["B"], r["T"], r["dtype"], r["mode"]): r.get("ms")
             for r in rows if r["kind"] == "torch"}
    hdr = (f"{'objective':<12} {'variant':<7} {'B x T':>11} {'dtype':<8} {'rlo ms':>8} {'roof ms':>8} "
           f"{'rlo/roof':>8} {'model':>6} {'eager ms':>9} {'eager/rlo':>9} {'compile ms':>10} "
           f"{'compile/rlo':>11} {'cold ms':>8} {'cached ms':>9}")
    print(hdr)
    for r in rows:
        if r["kind"] != "rlo":
            continue
        key = (r["objective"], r["B"], r["T"], r["dtype"])
        eager = torch.get(key + ("eager",))
        comp = torch.get(key + ("compile",))
        fmt = lambda x: f"{x:.3f}" if isinstance(x, (int, float)) else "-"
        ratio = lambda a, b: f"{a / b:.2f}" if isinstance(a, (int, float)) and b else "-"
        # model: the traffic model's (DRAM reads + writes) / its roofline, for this program
        print(f"{r['objective']:<12} {r.get('variant', 'fused'):<7} {r['B']:>5}x{r['T']:<5} "
              f"{r['dtype']:<8} {r['ms']:>8.3f} "
              f"{r['roofline_ms']:>8.3f} {r['ms'] / r['roofline_ms']:>8.2f} "
              f"{r.get('model_ratio', float('nan')):>6.2f} {fmt(eager):>9} "
              f"{ratio(eager, r['ms']):>9} {fmt(comp):>10} {ratio(comp, r['ms']):>11} "
              f"{r['cold_compile_ms']:>8.1f} {r['cached_load_ms']:>9.2f}")


if __name__ == "__main__":
    main()
