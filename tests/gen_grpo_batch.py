#!/usr/bin/env python3
"""Writes a random GRPO batch (B sequences x T tokens, lengths uniform in [T/4, T], or all T
with `full`; groups of 8) as safetensors, with the
standard library only (the format is an 8-byte header length, a JSON header, raw data).

    python3 tests/gen_grpo_batch.py 64 512 /tmp/grpo_64x512.safetensors [full]
    target/release/rloc run stdlib/grpo.rlo --batch /tmp/grpo_64x512.safetensors \
        --out /tmp/out.safetensors --group-size 8
"""

import json
import random
import struct
import sys


def main() -> None:
    b, t, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = random.Random(0)
    tensors = {}
    full = sys.argv[4:] == ["full"]
    lengths = [t if full else rng.randint(t // 4, t) for _ in range(b)]
    print(f"B={b} T={t} tokens={sum(lengths)}", file=sys.stderr)
    tensors["lengths"] = ("I64", [b], struct.pack(f"<{b}q", *lengths))
    for name in ["logp", "old_logp", "ref_logp"]:
        v = [-rng.random() * 3 for _ in range(b * t)]
        tensors[name] = ("F32", [b, t], struct.pack(f"<{b * t}f", *v))
    tensors["reward"] = ("F32", [b], struct.pack(f"<{b}f", *[float(rng.random() < 0.5) for _ in range(b)]))
    header, data, off = {}, b"", 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


if __name__ == "__main__":
    main()
