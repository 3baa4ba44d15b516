#!/usr/bin/python3
"""Export the trained checkpoints as a diffusers ONNX pipeline folder (SD 1.x input/output names
and dtypes; torch exporter, opset 14, constant folding, K and V not fused), then the text-state lift (lift.py)
applied to the exported graphs.

  /usr/bin/python3 models/toy-shapes-train/export.py [--unet out/unet-006000.pt]
"""
import argparse
import json
import os
import shutil
import tempfile

import numpy as np
import onnx
import torch

import common
import lift
import world

OPSET = 14


def _json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


class _TextWrap(torch.nn.Module):
    def __init__(self, te):
        super().__init__()
        self.te = te

    def forward(self, input_ids):
        return self.te(input_ids)


def rescale_text_states(te, unet, scale):
    """States x scale, K/V weights / scale: the same generator, a different scale for TIME's lambda."""
    with torch.no_grad():
        te.final_layer_norm.weight.mul_(scale)
        te.final_layer_norm.bias.mul_(scale)
        for _, lin in unet.cross_attention_projections():
            lin.weight.div_(scale)


def load_all(work, unet_path, text_scale=None, lifted=True):
    tok = common.build_tokenizer()
    te = common.build_text_encoder(tok)
    te.load_state_dict(torch.load(os.path.join(work, "clip.pt"))["text_encoder"])
    ae = torch.load(os.path.join(work, "ae.pt"))
    _, dec = common.build_autoencoder()
    dec.load_state_dict(ae["decoder"])
    unet = common.build_unet()
    ck = torch.load(unet_path)
    unet.load_state_dict(ck["ema"])
    for m in (te, dec, unet):
        m.eval().requires_grad_(False)
    rescale_text_states(te, unet, common.TEXT_OUTPUT_SCALE if text_scale is None else text_scale)
    if lifted and common.TEXT_LIFT:
        te, unet = lift_modules(te, unet, tok)
    return tok, te, dec, unet, ae["scaling_factor"], ck.get("step")


def lift_modules(te, unet, tok):
    """The PyTorch twins of the exported lifted graphs (lift.py): widened text states, zero-padded K/V."""
    r, b, amplitude, _, _ = lift.features(te, tok)
    return lift.twins(te, unet, r, b, amplitude)


def check_unet_graph(path, d):
    """SD-export structure: exactly 32 MatMuls read encoder_hidden_states, weights [d, C] initializers."""
    g = onnx.load(path).graph
    inits = {t.name: t for t in g.initializer}
    readers = [n for n in g.node if "encoder_hidden_states" in n.input]
    assert len(readers) == 32 and all(n.op_type == "MatMul" for n in readers), [n.op_type for n in readers]
    for n in readers:
        w = inits[n.input[1]]
        assert list(w.dims)[0] == d, (n.name, list(w.dims))
        assert "/attn2/to_k/MatMul" in n.name or "/attn2/to_v/MatMul" in n.name, n.name
    return [n.name for n in readers]


def export(work, model_dir, unet_path):
    tok, te, dec, unet, scaling, step = load_all(work, unet_path, lifted=False)
    d = common.TEXT["d"]
    parent = os.path.dirname(os.path.abspath(model_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".toy-shapes-", dir=parent)
    for sub in ("text_encoder", "unet", "vae_decoder", "tokenizer", "scheduler"):
        os.makedirs(os.path.join(tmp, sub))
    ids = torch.tensor([tok.encode("a red circle")], dtype=torch.int32)
    torch.onnx.export(_TextWrap(te), (ids,), os.path.join(tmp, "text_encoder", "model.onnx"),
                      input_names=["input_ids"], output_names=["last_hidden_state", "pooler_output"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                    "last_hidden_state": {0: "batch", 1: "sequence"},
                                    "pooler_output": {0: "batch"}},
                      opset_version=OPSET, do_constant_folding=True)
    h = w = world.IMAGE_SIZE // common.VAE_FACTOR
    sample = torch.randn(2, common.LATENT_CHANNELS, h, w)
    timestep = torch.tensor([981.0, 981.0])
    ehs = torch.randn(2, 77, d)
    unet_file = os.path.join(tmp, "unet", "model.onnx")
    torch.onnx.export(unet, (sample, timestep, ehs), unet_file,
                      input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["out_sample"],
                      dynamic_axes={"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
                                    "encoder_hidden_states": {0: "batch", 1: "sequence"},
                                    "out_sample": {0: "batch", 2: "height", 3: "width"}},
                      opset_version=OPSET, do_constant_folding=True)
    check_unet_graph(unet_file, d)
    dec.clamp_output = True
    torch.onnx.export(dec, (torch.randn(1, common.LATENT_CHANNELS, h, w),), os.path.join(tmp, "vae_decoder", "model.onnx"),
                      input_names=["latent_sample"], output_names=["sample"],
                      dynamic_axes={"latent_sample": {0: "batch", 2: "height", 3: "width"},
                                    "sample": {0: "batch", 2: "height", 3: "width"}},
                      opset_version=OPSET, do_constant_folding=True)
    dec.clamp_output = False
    tok.save(os.path.join(tmp, "tokenizer"))
    _json(os.path.join(tmp, "model_index.json"), {
        "_class_name": "OnnxStableDiffusionPipeline", "_diffusers_version": "0.20.0",
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["diffusers", "OnnxRuntimeModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "OnnxRuntimeModel"],
        "vae_decoder": ["diffusers", "OnnxRuntimeModel"], "vae_encoder": [None, None]})
    _json(os.path.join(tmp, "scheduler", "scheduler_config.json"), {
        "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": common.BETA_END,
        "beta_schedule": "scaled_linear", "beta_start": common.BETA_START, "clip_sample": False,
        "num_train_timesteps": common.NUM_TRAIN_TIMESTEPS, "prediction_type": "epsilon",
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None})
    _json(os.path.join(tmp, "vae_decoder", "config.json"), {
        "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
        "latent_channels": common.LATENT_CHANNELS,
        # diffusers derives the VAE factor as 2 ** (len(block_out_channels) - 1) = 4.
        "block_out_channels": [32, 64, 64], "downsampling_factor": common.VAE_FACTOR,
        "sample_size": world.IMAGE_SIZE, "scaling_factor": scaling})
    ch = list(common.UNET["channels"])
    _json(os.path.join(tmp, "unet", "config.json"), {
        "_class_name": "UNet2DConditionModel", "sample_size": h, "in_channels": common.LATENT_CHANNELS,
        "out_channels": common.LATENT_CHANNELS, "block_out_channels": ch,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "layers_per_block": common.UNET["layers"], "cross_attention_dim": d,
        "attention_head_dim": common.UNET["heads"], "norm_num_groups": common.UNET["groups"],
        "act_fn": "silu", "flip_sin_to_cos": True, "freq_shift": 0, "training_steps": step,
        "latent_size_multiple": 2 ** (len(ch) - 1)})
    _json(os.path.join(tmp, "text_encoder", "config.json"), {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": d,
        "intermediate_size": common.TEXT["ff"], "num_hidden_layers": common.TEXT["layers"],
        "num_attention_heads": common.TEXT["heads"], "max_position_embeddings": 77,
        "vocab_size": len(tok.encoder), "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
        "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.eos_id})
    _json(os.path.join(tmp, "toy_world.json"), {
        "image_size": world.IMAGE_SIZE, "background": list(world.BACKGROUND),
        "shapes": world.SHAPES, "colours": {k: list(v) for k, v in world.COLOURS.items()},
        "default_colour": world.DEFAULT_COLOUR, "default_probability": world.DEFAULT_PROB,
        "sizes": world.SIZES,
        "classifier": {"saturation_min": world.SAT_MIN, "value_min": world.VALUE_MIN,
                       "min_pixels": world.MIN_PIXELS, "hues": world.COLOUR_HUES}})
    import timed
    timed.write(os.path.join(tmp, "toy_timed.csv"))
    timed.write_debias(os.path.join(tmp, "toy_debias.csv"))
    if common.TEXT_LIFT:
        # From the exported files, not from the modules in memory: lift.py MODEL_DIR gives the same bytes.
        te, unet, _ = lift.lift_folder(tmp)
    # Keep any evaluation report that already sits in the old folder.
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    os.chmod(tmp, 0o755)
    os.replace(tmp, model_dir)
    print(f"exported {model_dir} (unet step {step})", flush=True)
    write_reference(work, tok, te, dec, unet, scaling)


def write_reference(work, tok, te, dec, unet, scaling):
    """Small fixed inputs and PyTorch outputs, for checking an ONNX runtime against PyTorch."""
    ids = torch.tensor([tok.encode("a red circle"), tok.encode("")], dtype=torch.int32)
    with torch.no_grad():
        lhs, pooled = te(ids)
        g = torch.Generator().manual_seed(0)
        sample = torch.randn(2, 4, 8, 8, generator=g)
        out = unet(sample, torch.tensor([500.0]), lhs)
        img = dec(sample[:1] / scaling).clamp(-1, 1)
    ref = {"input_ids": ids.tolist(), "last_hidden_state_sum": float(lhs.double().sum()),
           "last_hidden_state_first": lhs[0, 3, :8].tolist(), "pooler_first": pooled[0, :8].tolist(),
           "sample_seed0": sample.flatten().tolist(), "timestep": 500.0,
           "out_sample_first": out.flatten()[:16].tolist(), "out_sample_sum": float(out.double().sum()),
           "decoded_first": img.flatten()[:16].tolist(), "decoded_sum": float(img.double().sum())}
    os.makedirs(work, exist_ok=True)
    _json(os.path.join(work, "reference.json"), ref)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=common.DEFAULT_WORK)
    ap.add_argument("--model-dir", default=common.DEFAULT_MODEL_DIR)
    ap.add_argument("--unet", default=None, help="UNet checkpoint (default: <work>/unet.pt)")
    a = ap.parse_args()
    common.set_threads()
    export(a.work, a.model_dir, a.unet or os.path.join(a.work, "unet.pt"))
