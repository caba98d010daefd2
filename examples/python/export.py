#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes a model.py Model (or any state_dict with its config) as a dynasparse safetensors file.

    from export import save_model
    save_model(model, "model.safetensors")

The file is a standard safetensors file (readable by the `safetensors` package): float32
tensors under their state_dict names, and in `__metadata__` the key "dynasparse.config"
holding the configuration as JSON. Written by hand so no package beyond PyTorch is needed.
"""
import json
import struct

import torch


def save_tensors(path, tensors, metadata=None):
    """tensors: dict name -> torch.Tensor (float32/int8/int32/int64/bool), C order."""
    dtypes = {torch.float32: "F32", torch.float16: "F16", torch.int8: "I8", torch.int32: "I32", torch.int64: "I64",
              torch.bool: "BOOL", torch.uint8: "U8"}
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def save_model(model, path, extra=None, dtype=torch.float32):
    """dtype: float32, or float16 for half-size files (dynasparse widens F16 to float on load)."""
    tensors = {k: v.to(dtype) for k, v in model.state_dict().items()}
    if extra:
        tensors.update(extra)
    save_tensors(path, tensors, {"dynasparse.config": json.dumps(model.cfg, sort_keys=True)})
