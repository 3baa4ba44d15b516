#!/usr/bin/python3
"""An SD 1.x-attention-layout ONNX pipeline folder with small, random (seeded) weights, and a PyTorch reference
timing of its UNet: memory benchmarks measure SD's real activations (16 transformer blocks at SD's resolutions,
8 heads, self-attention over 64×64 = 4096 positions for 512×512 images) while the weights stay small.

  /usr/bin/python3 scripts/make-sd-layout-fixture.py OUT_DIR [--width-scale 0.1] [--fp16] [--seed 0]
  /usr/bin/python3 scripts/make-sd-layout-fixture.py --torch-reference DIR [--rows 2] [--latent 64] [--threads 2] [--json]

The first form writes OUT_DIR in the diffusers ONNX converter layout (model_index.json, scheduler/, tokenizer/,
text_encoder/, unet/, vae_decoder/, plus sd_layout_fixture.json saying how it was made). The UNet is
models/toy-shapes-train/nets.py's UNet2DConditionModel (diffusers module names) with SD 1.x's config:
block_out_channels = --width-scale × (320, 640, 1280, 1280) rounded to multiples of 32 (0.1: 32, 64, 128, 128),
layers_per_block 2, 8 heads, 32 groups, cross-attention width 768 (a one-layer CLIP-style text encoder of width 768);
the VAE decoder is small but upsamples 8× as SD's does. Same arguments, same bytes; exported with the toy model's
exporter settings (torch.onnx, opset 14, constant folding), --fp16 converted as scripts/make-model-variants.py does.

The second form rebuilds DIR's UNet in PyTorch (same seed, same weights, float32) and times one call of --rows rows
at a --latent × --latent latent (64: 512×512 images) after a warm-up call at 8×8, printing wall time, peak RSS
(getrusage) and the RSS before the call: the "what PyTorch needs" side of `time-edit bench generate --memory`.
Idle threads sleep (OMP_WAIT_POLICY=PASSIVE unless set), as time-edit's onnxruntime sessions' do.
"""
import argparse
import importlib.util
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(REPO, "models", "toy-shapes-train"))

SD_CHANNELS = (320, 640, 1280, 1280)  # SD 1.x unet/config.json block_out_channels
SD_HEADS = 8  # SD 1.x attention_head_dim (diffusers' name for the number of heads there)
SD_GROUPS = 32
SD_LAYERS = 2
SD_SAMPLE_SIZE = 64  # latent side: 512×512 images
TEXT_WIDTH = 768
TEXT_HEADS = 12
TEXT_LAYERS = 1
TEXT_FF = 768
VAE_FACTOR = 8
LATENT_CHANNELS = 4
SCALING_FACTOR = 0.18215
OPSET = 14  # as models/toy-shapes-train/export.py
META_FILE = "sd_layout_fixture.json"


def channels_for(scale):
    """SD's block widths × scale, each a multiple of 32 (GroupNorm groups) and at least 32."""
    return tuple(max(SD_GROUPS, int(round(c * scale / SD_GROUPS)) * SD_GROUPS) for c in SD_CHANNELS)


def build_unet(channels, seed):
    import torch
    from nets import UNet2DConditionModel

    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(channels=channels, cross_dim=TEXT_WIDTH, heads=SD_HEADS, groups=SD_GROUPS,
                                in_ch=LATENT_CHANNELS, layers=SD_LAYERS)
    return unet.eval().requires_grad_(False)


def build_decoder(seed):
    """latent [B,4,h,w] -> image [B,3,8h,8w]: SD's factor, a few small stages (the memory is in the UNet)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from nets import AeRes

    class Decoder8(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_in = nn.Conv2d(LATENT_CHANNELS, 64, 3, 1, 1)
            self.res0 = AeRes(64)
            self.up = nn.ModuleList([nn.Conv2d(64, 64, 3, 1, 1), nn.Conv2d(64, 32, 3, 1, 1), nn.Conv2d(32, 16, 3, 1, 1)])
            self.res = nn.ModuleList([AeRes(64), AeRes(32), AeRes(16)])
            self.norm_out = nn.GroupNorm(8, 16)
            self.conv_out = nn.Conv2d(16, 3, 3, 1, 1)

        def forward(self, z):
            x = self.res0(self.conv_in(z))
            for up, res in zip(self.up, self.res):
                x = res(up(F.interpolate(x, scale_factor=2.0, mode="nearest")))
            return self.conv_out(F.silu(self.norm_out(x)))

    torch.manual_seed(seed + 2)
    return Decoder8().eval().requires_grad_(False)


def build_text_encoder(vocab_size, seed):
    import torch
    from nets import TextEncoder

    torch.manual_seed(seed)
    te = TextEncoder(vocab_size, TEXT_WIDTH, TEXT_LAYERS, TEXT_HEADS, TEXT_FF)
    return te.eval().requires_grad_(False)


def _json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _load_variants():
    """scripts/make-model-variants.py (its name is not a module name): its float16 conversion."""
    spec = importlib.util.spec_from_file_location("make_model_variants", os.path.join(HERE, "make-model-variants.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_layout(unet_file):
    """SD's attention layout: 16 self-attention softmaxes (attn1) and 32 K/V MatMuls reading encoder_hidden_states."""
    import onnx
    from export import check_unet_graph

    check_unet_graph(unet_file, TEXT_WIDTH)
    g = onnx.load(unet_file).graph
    self_attn = [n for n in g.node if n.op_type == "Softmax" and "/attn1/" in n.name]
    assert len(self_attn) == 16, f"expected 16 self-attention softmaxes, found {len(self_attn)}"


def make(out, scale, fp16, seed):
    import torch

    import common  # models/toy-shapes-train: the CLIP-format tokenizer of the toy vocabulary

    torch.set_num_threads(1)
    channels = channels_for(scale)
    tok = common.build_tokenizer()
    te = build_text_encoder(len(tok.encoder), seed)
    unet = build_unet(channels, seed)
    dec = build_decoder(seed)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sd-layout-", dir=parent)
    try:
        for sub in ("text_encoder", "unet", "vae_decoder", "tokenizer", "scheduler"):
            os.makedirs(os.path.join(tmp, sub))
        gen = torch.Generator().manual_seed(seed)
        ids = torch.tensor([tok.encode("a circle")], dtype=torch.int32)
        torch.onnx.export(te, (ids,), os.path.join(tmp, "text_encoder", "model.onnx"),
                          input_names=["input_ids"], output_names=["last_hidden_state", "pooler_output"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "last_hidden_state": {0: "batch", 1: "sequence"},
                                        "pooler_output": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True)
        # Traced at the smallest latent the three downsamplings allow; height and width stay dynamic.
        sample = torch.randn(2, LATENT_CHANNELS, 8, 8, generator=gen)
        ehs = torch.randn(2, 77, TEXT_WIDTH, generator=gen)
        unet_file = os.path.join(tmp, "unet", "model.onnx")
        torch.onnx.export(unet, (sample, torch.tensor([981.0, 981.0]), ehs), unet_file,
                          input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["out_sample"],
                          dynamic_axes={"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
                                        "encoder_hidden_states": {0: "batch", 1: "sequence"},
                                        "out_sample": {0: "batch", 2: "height", 3: "width"}},
                          opset_version=OPSET, do_constant_folding=True)
        check_layout(unet_file)
        torch.onnx.export(dec, (sample[:1],), os.path.join(tmp, "vae_decoder", "model.onnx"),
                          input_names=["latent_sample"], output_names=["sample"],
                          dynamic_axes={"latent_sample": {0: "batch", 2: "height", 3: "width"},
                                        "sample": {0: "batch", 2: "height", 3: "width"}},
                          opset_version=OPSET, do_constant_folding=True)
        if fp16:
            variants = _load_variants()
            for sub in ("text_encoder", "unet", "vae_decoder"):
                variants.to_fp16(os.path.join(tmp, sub, "model.onnx"))
        tok.save(os.path.join(tmp, "tokenizer"))
        _json(os.path.join(tmp, "model_index.json"), {
            "_class_name": "OnnxStableDiffusionPipeline", "_diffusers_version": "0.20.0",
            "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
            "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["diffusers", "OnnxRuntimeModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "OnnxRuntimeModel"],
            "vae_decoder": ["diffusers", "OnnxRuntimeModel"], "vae_encoder": [None, None]})
        _json(os.path.join(tmp, "scheduler", "scheduler_config.json"), {
            "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
            "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
            "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None})
        _json(os.path.join(tmp, "vae_decoder", "config.json"), {
            "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": LATENT_CHANNELS,
            "block_out_channels": [64, 64, 32, 16], "downsampling_factor": VAE_FACTOR,
            "sample_size": SD_SAMPLE_SIZE * VAE_FACTOR, "scaling_factor": SCALING_FACTOR})
        _json(os.path.join(tmp, "unet", "config.json"), {
            "_class_name": "UNet2DConditionModel", "sample_size": SD_SAMPLE_SIZE, "in_channels": LATENT_CHANNELS,
            "out_channels": LATENT_CHANNELS, "block_out_channels": list(channels),
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "mid_block_type": "UNetMidBlock2DCrossAttn", "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            "layers_per_block": SD_LAYERS, "cross_attention_dim": TEXT_WIDTH, "attention_head_dim": SD_HEADS,
            "norm_num_groups": SD_GROUPS, "act_fn": "silu", "flip_sin_to_cos": True, "freq_shift": 0})
        _json(os.path.join(tmp, "text_encoder", "config.json"), {
            "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": TEXT_WIDTH,
            "intermediate_size": TEXT_FF, "num_hidden_layers": TEXT_LAYERS, "num_attention_heads": TEXT_HEADS,
            "max_position_embeddings": 77, "vocab_size": len(tok.encoder), "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.eos_id})
        count = lambda m: sum(p.numel() for p in m.parameters())
        _json(os.path.join(tmp, META_FILE), {
            "generator": "scripts/make-sd-layout-fixture.py", "width_scale": scale, "seed": seed, "fp16": fp16,
            "block_out_channels": list(channels), "heads": SD_HEADS, "text_width": TEXT_WIDTH,
            "parameters": {"unet": count(unet), "text_encoder": count(te), "vae_decoder": count(dec)}})
        os.chmod(tmp, 0o755)
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {out}: UNet block_out_channels {list(channels)}, {count(unet) / 1e6:.2f} M parameters"
          f"{' (float16)' if fp16 else ''}", flush=True)


def _rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def torch_reference(folder, rows, latent, threads, as_json):
    """One UNet call in PyTorch on DIR's weights; prints wall time and peak RSS (and RSS before the call)."""
    # Idle OpenMP threads sleep instead of spinning, as time-edit's onnxruntime sessions do (docs/cli.md, "Threads
    # and devices"): on a shared, loaded machine spinning threads made a call 10-30x slower. Read when torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    meta_path = os.path.join(folder, META_FILE)
    if not os.path.isfile(meta_path):
        sys.exit(f"make-sd-layout-fixture.py: {meta_path} is missing: --torch-reference needs a folder this script made")
    with open(meta_path) as f:
        meta = json.load(f)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    unet = build_unet(tuple(meta["block_out_channels"]), int(meta["seed"]))
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(rows, LATENT_CHANNELS, latent, latent, generator=gen)
    ehs = torch.randn(rows, 77, TEXT_WIDTH, generator=gen)
    timestep = torch.full((rows,), 981.0)
    with torch.no_grad():
        # A warm-up call at the smallest latent: PyTorch's one-time set-up is not part of the measured call.
        unet(sample[:1, :, :8, :8], timestep[:1], ehs[:1])
    before = _rss_bytes()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = unet(sample, timestep, ehs)
    wall = time.perf_counter() - t0
    peak = _rss_bytes()
    finite = bool(torch.isfinite(out).all())
    result = {"backend": f"pytorch {torch.__version__}", "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "rows": rows, "latent": latent, "threads": threads,
              "wall_s": wall, "peak_rss_bytes": peak, "rss_before_call_bytes": before, "finite": finite}
    if as_json:
        print(json.dumps(result))
    else:
        print(f"PyTorch {torch.__version__}, {threads} threads (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}): one UNet call of {rows} rows at a {latent}×{latent} latent: "
              f"{wall:.2f} s, peak RSS {peak / 1e9:.2f} GB ({before / 1e9:.2f} GB before the call)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", help="pipeline folder to write (replaced if it exists)")
    ap.add_argument("--width-scale", type=float, default=0.1, help="UNet widths as a share of SD's (default 0.1)")
    ap.add_argument("--fp16", action="store_true", help="every model in float16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-reference", metavar="DIR", help="time DIR's UNet in PyTorch instead of writing a folder")
    ap.add_argument("--rows", type=int, default=2, help="UNet rows for --torch-reference (2: one image with guidance)")
    ap.add_argument("--latent", type=int, default=SD_SAMPLE_SIZE, help="latent side for --torch-reference")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads for --torch-reference")
    ap.add_argument("--json", action="store_true", help="--torch-reference: one JSON line")
    a = ap.parse_args()
    # torch.onnx's tracer warns about every shape it records as a constant; the exported graphs are checked instead.
    warnings.simplefilter("ignore")
    if a.torch_reference is not None:
        if a.out is not None:
            ap.error("give OUT_DIR or --torch-reference DIR, not both")
        if a.rows < 1 or a.latent < 8 or a.latent % 8 != 0 or a.threads < 1:
            ap.error("--rows and --threads must be ≥ 1 and --latent a multiple of 8")
        torch_reference(a.torch_reference, a.rows, a.latent, a.threads, a.json)
        return
    if a.out is None:
        ap.error("OUT_DIR is required")
    if not (math.isfinite(a.width_scale) and 0 < a.width_scale <= 1):
        ap.error("--width-scale must be in (0, 1]")
    if a.seed < 0:
        ap.error("--seed must be ≥ 0")
    make(a.out, a.width_scale, a.fp16, a.seed)


if __name__ == "__main__":
    main()
