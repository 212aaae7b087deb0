"""The executable of test target NAME from `cargo test --no-run --message-format=json` on stdin
(the last one built). Used by bench/gpu.sh and examples/build_cuda.sh to carry test binaries to
the GPU machine, which has no cargo."""
import json
import sys

name = sys.argv[1]
found = ""
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == name:
        found = m["executable"]
print(found)
