#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Sets fields of the dynasparse config stored in a safetensors file's metadata, in place.

    /usr/bin/python3 examples/python/set_config.py examples/models/fortunes_dense.safetensors skip_threshold=0.1

Values are parsed as JSON (numbers, true/false, strings in quotes); tensors are untouched.
"""
import json
import struct
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path = sys.argv[1]
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    cfg = json.loads(header["__metadata__"]["dynasparse.config"])
    for arg in sys.argv[2:]:
        key, _, value = arg.partition("=")
        if key not in cfg:
            sys.exit("%s: no config field %r" % (path, key))
        cfg[key] = json.loads(value)
    header["__metadata__"]["dynasparse.config"] = json.dumps(cfg, sort_keys=True)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob[8 + n:])


if __name__ == "__main__":
    main()
