#!/usr/bin/python3
"""Train the toy-shapes model from scratch (Debian python3-torch, CPU), then export and evaluate.

  /usr/bin/python3 models/toy-shapes-train/train.py            # full recipe (about an hour, 1 thread)
  /usr/bin/python3 models/toy-shapes-train/train.py --smoke    # a few steps per stage (layout check)

Stages (each saves a checkpoint under --work and is skipped when its checkpoint exists):
  1. clip  : CLIP-style contrastive training of the text encoder against a small image tower
  2. ae    : autoencoder (factor 4); latent scaling factor = 1/std of the data set latents
  3. unet  : UNet on the frozen text encoder's states (eps-prediction, scaled-linear schedule,
             10% caption dropout to the empty prompt), EMA weights, checkpoints every 1000 steps
then export.py (ONNX folder) and evaluate.py (colour accuracy, TIME edit check, grid PNG).
"""
import argparse
import copy
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import common
import world


def log(msg, f=[None]):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)


def lr_at(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def end_mask(ids):
    """1 at the first end token and every position after it (the padding), else 0."""
    pos = torch.arange(ids.shape[1])[None, :]
    return (pos >= ids.argmax(-1, keepdim=True)).float()


def train_clip(ds, tok, steps, work):
    path = os.path.join(work, "clip.pt")
    if os.path.exists(path):
        log("clip: checkpoint exists, skipped")
        return
    torch.manual_seed(common.SEED + 1)
    rng = np.random.default_rng(common.SEED + 1)
    te = common.build_text_encoder(tok)
    tower = common.build_image_tower()
    proj = torch.nn.Linear(common.TEXT["d"], common.EMBED_DIM, bias=False)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = list(te.parameters()) + list(tower.parameters()) + list(proj.parameters()) + [logit_scale]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    bs = 64
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, 1e-3, 100)
        _, imgs, caps = ds.batch(rng, bs)
        ids = ds.token_ids[caps]
        states, _ = te(ids)
        # Pool the end token and the padding: the UNet reads the text mostly there.
        m = end_mask(ids)
        tfeat = proj((states * m[..., None]).sum(1) / m.sum(1, keepdim=True))
        ifeat = tower(imgs)
        tfeat = F.normalize(tfeat, dim=-1)
        ifeat = F.normalize(ifeat, dim=-1)
        logits = logit_scale.clamp(max=math.log(100)).exp() * ifeat @ tfeat.t()
        # Identical captions in a batch are all positives of each other.
        same = (caps[:, None] == caps[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                      + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"clip step {step}/{steps} loss {loss.item():.4f} scale {logit_scale.exp().item():.1f} "
                f"({time.time() - t0:.0f}s)")
    torch.save({"text_encoder": te.state_dict(), "image_tower": tower.state_dict()}, path + ".tmp")
    os.replace(path + ".tmp", path)


def train_ae(ds, steps, work):
    path = os.path.join(work, "ae.pt")
    if os.path.exists(path):
        log("ae: checkpoint exists, skipped")
        return
    torch.manual_seed(common.SEED + 2)
    rng = np.random.default_rng(common.SEED + 2)
    enc, dec = common.build_autoencoder()
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    bs = 32
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, 2e-3, 100)
        _, imgs, _ = ds.batch(rng, bs)
        z = enc(imgs)
        # Noise on the latents keeps the decoder tolerant of imperfect UNet samples;
        # the penalty keeps the latent scale bounded.
        rec = dec(z + 0.1 * torch.randn_like(z))
        loss = F.mse_loss(rec, imgs) + 0.5 * F.l1_loss(rec, imgs) + 1e-3 * (z ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"ae step {step}/{steps} loss {loss.item():.5f} zstd {z.std().item():.3f} ({time.time() - t0:.0f}s)")
    with torch.no_grad():
        zs = torch.cat([enc(torch.from_numpy(ds.images[i:i + 500]).float() / 127.5 - 1.0)
                        for i in range(0, len(ds.images), 500)])
    std = zs.std().item()
    scaling = float(f"{1.0 / std:.5f}")
    log(f"ae: latent std {std:.4f} -> scaling_factor {scaling}")
    torch.save({"encoder": enc.state_dict(), "decoder": dec.state_dict(), "scaling_factor": scaling}, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_frozen(tok, work):
    te = common.build_text_encoder(tok)
    te.load_state_dict(torch.load(os.path.join(work, "clip.pt"))["text_encoder"])
    te.eval().requires_grad_(False)
    ae = torch.load(os.path.join(work, "ae.pt"))
    enc, dec = common.build_autoencoder()
    enc.load_state_dict(ae["encoder"])
    dec.load_state_dict(ae["decoder"])
    enc.eval().requires_grad_(False)
    dec.eval().requires_grad_(False)
    return te, enc, dec, ae["scaling_factor"]


def train_unet(ds, tok, steps, work, quick_every):
    final = os.path.join(work, "unet.pt")
    if os.path.exists(final):
        log("unet: checkpoint exists, skipped")
        return
    import evaluate
    te, enc, dec, scaling = load_frozen(tok, work)
    with torch.no_grad():
        cap_states = torch.cat([te(ds.token_ids[i:i + 256])[0] for i in range(0, len(ds.token_ids), 256)])
        empty = te(ds.empty_ids)[0]
        latents = torch.cat([enc(torch.from_numpy(ds.images[i:i + 500]).float() / 127.5 - 1.0)
                             for i in range(0, len(ds.images), 500)]) * scaling
    log(f"unet: {len(ds.captions)} captions cached, latents {tuple(latents.shape)} std {latents.std():.3f}")
    torch.manual_seed(common.SEED + 3)
    rng = np.random.default_rng(common.SEED + 3)
    unet = common.build_unet()
    ema = copy.deepcopy(unet).requires_grad_(False)
    log(f"unet parameters: {sum(p.numel() for p in unet.parameters())}")
    ac = common.alphas_cumprod()
    opt = torch.optim.AdamW(unet.parameters(), lr=8e-4, weight_decay=0.0)
    bs = 64
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, 8e-4, 300)
        idx = torch.from_numpy(rng.integers(len(ds.meta), size=bs))
        caps = torch.from_numpy(np.array([ds.options[i][rng.integers(len(ds.options[i]))] for i in idx.tolist()]))
        ctx = cap_states[caps]
        drop = torch.from_numpy(rng.random(bs) < common.CAPTION_DROPOUT)
        ctx = torch.where(drop[:, None, None], empty.expand(bs, -1, -1), ctx)
        z0 = latents[idx]
        t = torch.from_numpy(rng.integers(common.NUM_TRAIN_TIMESTEPS, size=bs))
        noise = torch.randn_like(z0)
        a = ac[t][:, None, None, None]
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        pred = unet(zt, t.float(), ctx)
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.mul_(decay).add_(p, alpha=1 - decay)
        if step % 100 == 0 or step == steps - 1:
            el = time.time() - t0
            log(f"unet step {step}/{steps} loss {loss.item():.4f} ({el:.0f}s, eta {el / (step + 1) * (steps - step - 1) / 60:.1f} min)")
        if (step + 1) % 1000 == 0 or step == steps - 1:
            p = os.path.join(work, f"unet-{step + 1:06d}.pt")
            torch.save({"ema": ema.state_dict(), "step": step + 1}, p + ".tmp")
            os.replace(p + ".tmp", p)
        if quick_every and (step + 1) % quick_every == 0 and step + 1 < steps:
            r = evaluate.quick(ema, te, tok, dec, scaling)
            log(f"quick eval at {step + 1}: {json.dumps(r)}")
    torch.save({"ema": ema.state_dict(), "step": steps}, final + ".tmp")
    os.replace(final + ".tmp", final)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=common.DEFAULT_WORK)
    ap.add_argument("--model-dir", default=common.DEFAULT_MODEL_DIR)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--clip-steps", type=int, default=800)
    ap.add_argument("--ae-steps", type=int, default=1000)
    ap.add_argument("--unet-steps", type=int, default=2800)
    ap.add_argument("--quick-every", type=int, default=1400)
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()
    common.set_threads()
    if args.smoke:
        # Never overwrite the real checkpoints or the committed folder with an untrained smoke model.
        import tempfile
        if args.work == common.DEFAULT_WORK:
            args.work = tempfile.mkdtemp(prefix="toy-smoke-")
        if args.model_dir == common.DEFAULT_MODEL_DIR:
            args.model_dir = os.path.join(args.work, "toy-shapes")
        log(f"smoke run in {args.work}")
        args.clip_steps, args.ae_steps, args.unet_steps, args.quick_every = 3, 3, 3, 0
    os.makedirs(args.work, exist_ok=True)
    t0 = time.time()
    tok = common.build_tokenizer()
    for w in world.vocabulary_words():
        assert len(tok.tokens(w)) == 1, w
    n = 600 if args.smoke else common.DATASET_SIZE
    ds = common.Dataset(n, common.SEED, tok)
    log(f"data: {n} scenes, {len(ds.captions)} captions, vocab {len(tok.encoder)} ({time.time() - t0:.0f}s)")
    train_clip(ds, tok, args.clip_steps, args.work)
    train_ae(ds, args.ae_steps, args.work)
    train_unet(ds, tok, args.unet_steps, args.work, args.quick_every)
    log(f"training done in {(time.time() - t0) / 60:.1f} min")
    import export
    export.export(args.work, args.model_dir, os.path.join(args.work, "unet.pt"))
    if not args.skip_eval:
        import evaluate
        if args.smoke:
            evaluate.run(args.work, args.model_dir, seeds=4, named_seeds=2, n_edits=1,
                         out_json=os.path.join(args.work, "results.json"), grid_path=os.path.join(args.work, "samples.png"))
        else:
            evaluate.run(args.work, args.model_dir)
    log(f"all done in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
