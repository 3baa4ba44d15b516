"""Rebuild the recipe's PyTorch modules from an exported toy-shapes ONNX folder: named initializers keep their
parameter names; the exporter's anonymous ones (onnx::MatMul_123 ...) are mapped back by the node that reads them
(MatMul -> weight transposed, Mul -> LayerNorm weight, Add -> bias). lift.py computes the lift from this rebuild
of the exported base folder, so the lifted folder is a function of the exported bytes alone."""
import json
import os

import numpy as np
import onnx
import torch
from onnx import numpy_helper

import common


def state_from_onnx(path, prefix=""):
    """The state dict of the module whose graph is the ONNX file at path (names without prefix)."""
    g = onnx.load(path).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    sd = {}
    for n in g.node:
        for i in n.input:
            if i not in inits:
                continue
            if not i.startswith("onnx::"):
                sd[i[len(prefix):] if i.startswith(prefix) else i] = inits[i]
                continue
            parts = n.name.strip("/").split("/")
            mod = ".".join(parts[:-1])
            if mod.startswith(prefix.rstrip(".")) and prefix:
                mod = mod[len(prefix):]
            op = n.op_type
            if op == "MatMul":
                key, val = mod + ".weight", inits[i].T
            elif op == "Mul":
                key, val = mod + ".weight", inits[i].reshape(-1)
            elif op == "Add":
                key, val = mod + ".bias", inits[i].reshape(-1)
            else:
                raise ValueError((n.name, op, i))
            assert key not in sd, key
            sd[key] = val
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in sd.items()}

def load(model_dir):
    """(tokenizer, text encoder, VAE decoder, UNet, scaling_factor) of an exported, not lifted, folder."""
    tok = common.build_tokenizer()
    te = common.build_text_encoder(tok)
    te.load_state_dict(state_from_onnx(os.path.join(model_dir, "text_encoder", "model.onnx"), "te."), strict=True)
    unet = common.build_unet()
    unet.load_state_dict(state_from_onnx(os.path.join(model_dir, "unet", "model.onnx")), strict=True)
    _, dec = common.build_autoencoder()
    dec.load_state_dict(state_from_onnx(os.path.join(model_dir, "vae_decoder", "model.onnx")), strict=True)
    for m in (te, unet, dec):
        m.eval().requires_grad_(False)
    with open(os.path.join(model_dir, "vae_decoder", "config.json")) as f:
        scaling = json.load(f)["scaling_factor"]
    return tok, te, dec, unet, scaling
