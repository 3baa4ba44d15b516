"""Text-state lift: widen the exported text states from d = 128 to D = 128 + m with fixed random Fourier
features of the states themselves, y = [x ; a*sqrt(2/m)*cos(R x / sigma + b)], and pad the UNet's 32
cross-attention K/V weights with m zero rows, so that the generator is the same function (the UNet ignores
the extra features) while TIME's closed form, which works in the text-state space, gets D > 308 dimensions.

Why (models/README.md, "Text-state lift"): with d = 128 the 308 rows of an augmented edit span the whole
state space, so the closed form moves every prompt; in D dimensions the edit is a kernel ridge regression
with the kernel x.x' + a^2 exp(-|x - x'|^2 / 2 sigma^2) (Rahimi and Recht, "Random Features for Large-Scale
Kernel Machines", NeurIPS 2007), which leaves prompts whose states are far from the edit's rows alone.
sigma = TEXT_LIFT["bandwidth"] x the median distance between exported states of training captions, a = their
RMS norm; the bandwidth factor was chosen on validation prompts that are not in toy_timed.csv.

The lift is a function of the exported base folder alone: lift_folder rebuilds the text encoder from the folder's
ONNX initializers (from_onnx.py), computes the statistics and features from it, and rewrites the graphs and configs.
export.py calls it on every export when common.TEXT_LIFT is set, and

  /usr/bin/python3 models/toy-shapes-train/lift.py MODEL_DIR

applies it to an exported base folder in place (atomically: a copy is lifted, then renamed over it), so the
lifted folder can be rebuilt from the base one byte for byte without the training checkpoints.
"""
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

import common
import from_onnx
from nets import UNet2DConditionModel


def statistics(te, tok):
    """(median pairwise distance, RMS norm) of the states of the first 600 scenes' captions, all positions."""
    caps = common.Dataset(600, common.SEED, tok).captions
    ids = torch.tensor([tok.encode(c) for c in caps], dtype=torch.int64)
    with torch.no_grad():
        x = te(ids)[0].reshape(-1, te.final_layer_norm.weight.shape[0])
    g = torch.Generator().manual_seed(1)
    i = torch.randint(len(x), (4000,), generator=g)
    j = torch.randint(len(x), (4000,), generator=g)
    return float((x[i] - x[j]).norm(dim=1).median()), float(x.norm(dim=1).pow(2).mean().sqrt())


def features(te, tok, cfg=None):
    """The fixed feature map: (R [m, d], b [m], amplitude, sigma, rms) from the recipe's seed and statistics."""
    cfg = cfg or common.TEXT_LIFT
    median, rms = statistics(te, tok)
    sigma = cfg["bandwidth"] * median
    m, d = cfg["features"], te.final_layer_norm.weight.shape[0]
    g = torch.Generator().manual_seed(cfg["seed"])
    r = torch.randn(m, d, generator=g) / sigma
    b = torch.rand(m, generator=g) * 2 * math.pi
    return r, b, rms * math.sqrt(2.0 / m), sigma, rms


class LiftedTextEncoder(torch.nn.Module):
    """input_ids -> (last_hidden_state [B,S,D], pooler_output [B,D]) with D = d + m."""

    def __init__(self, te, r, b, amplitude):
        super().__init__()
        self.te, self.r, self.b, self.amplitude = te, r, b, amplitude
        self.final_layer_norm = te.final_layer_norm

    def forward(self, input_ids):
        x, _ = self.te(input_ids)
        y = torch.cat([x, self.amplitude * torch.cos(x @ self.r.T + self.b)], -1)
        eos = input_ids.long().argmax(-1)
        pooled = torch.gather(y, 1, eos[:, None, None].expand(-1, 1, y.shape[2])).squeeze(1)
        return y, pooled


def pad_unet(unet, width):
    """A copy of unet whose 32 cross-attention K/V weights read `width` inputs (the new columns zero)."""
    u = UNet2DConditionModel(channels=common.UNET["channels"], cross_dim=width, heads=common.UNET["heads"],
                             groups=common.UNET["groups"], in_ch=common.LATENT_CHANNELS, layers=common.UNET["layers"])
    sd = unet.state_dict()
    for name, _ in unet.cross_attention_projections():
        w = sd[name + ".weight"]
        sd[name + ".weight"] = torch.cat([w, torch.zeros(w.shape[0], width - w.shape[1])], 1)
    u.load_state_dict(sd, strict=True)
    return u.eval().requires_grad_(False)


def twins(te, unet, r, b, amplitude):
    """The PyTorch twins of the lifted graphs: the widened text encoder and the zero-padded UNet."""
    return LiftedTextEncoder(te, r, b, amplitude), pad_unet(unet, r.shape[1] + r.shape[0])


def lift_text_onnx(path, r, b, amplitude):
    """Append the features to the exported text encoder: its final LayerNorm output x becomes [x ; features(x)],
    which feeds last_hidden_state and the pooler."""
    mdl = onnx.load(path)
    g = mdl.graph
    final = [n for n in g.node if "last_hidden_state" in n.output][0]
    final.output[0] = "/lift/x"
    g.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(r.numpy().T).astype(np.float32), "/lift/R"),
        numpy_helper.from_array(b.numpy().astype(np.float32), "/lift/b"),
        numpy_helper.from_array(np.array(amplitude, np.float32), "/lift/amplitude")])
    new = [helper.make_node("MatMul", ["/lift/x", "/lift/R"], ["/lift/xr"], name="/lift/MatMul"),
           helper.make_node("Add", ["/lift/xr", "/lift/b"], ["/lift/xb"], name="/lift/Add"),
           helper.make_node("Cos", ["/lift/xb"], ["/lift/cos"], name="/lift/Cos"),
           helper.make_node("Mul", ["/lift/cos", "/lift/amplitude"], ["/lift/features"], name="/lift/Mul"),
           helper.make_node("Concat", ["/lift/x", "/lift/features"], ["last_hidden_state"], axis=-1,
                            name="/lift/Concat")]
    nodes = list(g.node)
    at = nodes.index(final) + 1
    nodes[at:at] = new
    del g.node[:]
    g.node.extend(nodes)
    width = r.shape[1] + r.shape[0]
    for o in g.output:
        if o.name == "last_hidden_state":
            o.type.tensor_type.shape.dim[2].dim_value = width
    onnx.checker.check_model(mdl)
    onnx.save(mdl, path)
    return width


def pad_unet_onnx(path, width):
    """Give the 32 MatMuls that read encoder_hidden_states [width, C] weights (the new rows zero)."""
    mdl = onnx.load(path)
    g = mdl.graph
    readers = [n for n in g.node if "encoder_hidden_states" in n.input]
    assert len(readers) == 32, len(readers)
    inits = {t.name: t for t in g.initializer}
    for n in readers:
        t = inits[n.input[1]]
        w = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(np.concatenate([w, np.zeros((width - w.shape[0], w.shape[1]), w.dtype)]),
                                           t.name))
    for i in g.input:
        if i.name == "encoder_hidden_states":
            i.type.tensor_type.shape.dim[2].dim_value = width
    onnx.checker.check_model(mdl)
    onnx.save(mdl, path)


def _rewrite_json(path, update):
    with open(path) as f:
        cfg = json.load(f)
    update(cfg)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def refuse_lifted(model_dir):
    with open(os.path.join(model_dir, "text_encoder", "config.json")) as f:
        if "text_state_lift" in json.load(f):
            raise SystemExit(f"{model_dir} is already lifted (text_encoder/config.json has text_state_lift)")


def lift_folder(model_dir, cfg=None):
    """Lift the exported base folder model_dir in place (text encoder graph and config, UNet K/V weights and
    cross_attention_dim); returns the PyTorch twins (lifted text encoder, padded UNet) and the tokenizer."""
    cfg = cfg or common.TEXT_LIFT
    refuse_lifted(model_dir)
    te_config = os.path.join(model_dir, "text_encoder", "config.json")
    tok, te, _, unet, _ = from_onnx.load(model_dir)
    r, b, amplitude, sigma, rms = features(te, tok, cfg)
    width = lift_text_onnx(os.path.join(model_dir, "text_encoder", "model.onnx"), r, b, amplitude)
    pad_unet_onnx(os.path.join(model_dir, "unet", "model.onnx"), width)

    def note(c):
        c["text_state_lift"] = {
            "features": cfg["features"], "seed": cfg["seed"], "bandwidth": cfg["bandwidth"], "sigma": sigma,
            "amplitude": amplitude, "state_rms": rms, "output_width": width,
            "doc": "last_hidden_state = [x ; amplitude*cos(x R^T + b)], x the 128-wide final LayerNorm "
                   "output; the UNet's K/V weights are zero on the extra features (models/README.md)"}

    def widen(c):
        c["cross_attention_dim"] = width

    _rewrite_json(te_config, note)
    _rewrite_json(os.path.join(model_dir, "unet", "config.json"), widen)
    return (*twins(te, unet, r, b, amplitude), tok)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: lift.py MODEL_DIR  (an exported, not yet lifted, toy-shapes folder)")
    if not common.TEXT_LIFT:
        raise SystemExit("common.TEXT_LIFT is None: nothing to apply")
    common.set_threads()
    model_dir = os.path.abspath(sys.argv[1])
    refuse_lifted(model_dir)
    tmp = tempfile.mkdtemp(prefix=".toy-shapes-lift-", dir=os.path.dirname(model_dir))
    try:
        work = os.path.join(tmp, "model")
        shutil.copytree(model_dir, work)
        lift_folder(work)
        os.chmod(work, 0o755)
        old = os.path.join(tmp, "old")
        os.replace(model_dir, old)
        try:
            os.replace(work, model_dir)
        except OSError:
            os.replace(old, model_dir)  # put the plain folder back before the temp folder goes
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"lifted {model_dir}", flush=True)


if __name__ == "__main__":
    main()
