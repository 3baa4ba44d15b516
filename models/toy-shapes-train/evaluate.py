#!/usr/bin/python3
"""Evaluate the trained model with the script's own sampler (PNDM, 50 steps, guidance 7.5):
colour accuracy for named and unnamed prompts, the paper's TIME edit (float64 solve, all 77
positions, augmentations, lambda = 0.1, edited weights in both guidance branches), padding-state
cosines, latent colour readability at the noisiest step, and a grid PNG.

  /usr/bin/python3 models/toy-shapes-train/evaluate.py [--unet out/unet-006000.pt] [--seeds 16]
"""
import argparse
import json
import os
import time

import numpy as np
import torch

import common
import timed
import world

AUGMENTATIONS = ["A photo of ", "An image of ", "A picture of "]
LAMBDA = 0.1


def pndm_timesteps(n):
    r = common.NUM_TRAIN_TIMESTEPS // n
    t = np.arange(n) * r + 1  # steps_offset 1
    return list(np.concatenate([t[:-1], t[-2:-1], t[-1:]])[::-1]), r


@torch.no_grad()
def sample(unet, dec, scaling, cond, uncond, seeds, steps=50, guidance=7.5, chunk=128):
    """PNDM (PLMS with skip_prk_steps, diffusers semantics). cond/uncond [N,77,d]; one seed per row."""
    ac = common.alphas_cumprod().double()
    final_ac = ac[0]
    out = []
    h = w = world.IMAGE_SIZE // common.VAE_FACTOR
    for s0 in range(0, len(seeds), chunk):
        sl = slice(s0, s0 + chunk)
        c, u = cond[sl], uncond[sl]
        x = torch.stack([torch.randn(common.LATENT_CHANNELS, h, w, generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds[sl]])
        ts, r = pndm_timesteps(steps)
        ets, cur, counter = [], None, 0
        for t in ts:
            t = int(t)
            e = unet(torch.cat([x, x]), torch.tensor([float(t)]), torch.cat([u, c]))
            eu, ec = e.chunk(2)
            eps = eu + guidance * (ec - eu)
            prev = t - r
            if counter != 1:
                ets = ets[-3:] + [eps]
            else:
                prev, t = t, t + r
            if len(ets) == 1 and counter == 0:
                ep = eps
                cur = x
            elif len(ets) == 1 and counter == 1:
                ep = (eps + ets[-1]) / 2
                x = cur
                cur = None
            elif len(ets) == 2:
                ep = (3 * ets[-1] - ets[-2]) / 2
            elif len(ets) == 3:
                ep = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
            else:
                ep = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
            at = ac[t]
            ap = ac[prev] if prev >= 0 else final_ac
            coef = (ap / at).sqrt()
            denom = at * (1 - ap).sqrt() + (at * (1 - at) * ap).sqrt()
            x = (coef * x.double() - (ap - at) * ep.double() / denom).float()
            counter += 1
        img = dec(x / scaling).clamp(-1, 1)
        out.append(((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


@torch.no_grad()
def encode(te, tok, prompts):
    ids = torch.tensor([tok.encode(p) for p in prompts], dtype=torch.int64)
    return te(ids)[0]


def colour_rate(unet, te, tok, dec, scaling, prompts, expected, seeds, steps=50):
    """Fraction of (prompt, seed) images whose classified colour equals expected[prompt]."""
    cond = encode(te, tok, [p for p in prompts for _ in seeds])
    uncond = encode(te, tok, [""]).expand(len(cond), -1, -1)
    imgs = sample(unet, dec, scaling, cond, uncond, [s for _ in prompts for s in seeds], steps=steps)
    got = [world.classify_colour(im) for im in imgs]
    exp = [expected[p] for p in prompts for _ in seeds]
    per = {}
    for i, p in enumerate(prompts):
        k = len(seeds)
        per[p] = sum(g == e for g, e in zip(got[i * k:(i + 1) * k], exp[i * k:(i + 1) * k])) / k
    return sum(g == e for g, e in zip(got, exp)) / len(got), per, imgs, got


def quick(unet, te, tok, dec, scaling):
    unet.eval()
    named = [world.fill("a {c} {s}", s, c, "") for s in world.SHAPES for c in world.COLOUR_NAMES]
    exp = {world.fill("a {c} {s}", s, c, ""): c for s in world.SHAPES for c in world.COLOUR_NAMES}
    a, _, _, _ = colour_rate(unet, te, tok, dec, scaling, named, exp, [0, 1], steps=20)
    un = [world.fill("a {s}", s, "", "") for s in world.SHAPES]
    b, per, _, _ = colour_rate(unet, te, tok, dec, scaling, un, {p: world.DEFAULT_COLOUR[p.split()[-1]] for p in un},
                               list(range(6)), steps=20)
    return {"named": round(a, 3), "default": round(b, 3)}


# ------------------------------------------------------------------ TIME (Orgad, Kawar, Belinkov 2023)


def _ids_no_pad(tok, text):
    ids = [tok.bos_id] + tok.tokens(text)[:75] + [tok.eos_id]
    an, a = tok.encoder["an</w>"], tok.encoder["a</w>"]
    return [a if t == an else t for t in ids]  # the paper's code treats "an" as "a"


def align(tok, old, new, length=77):
    """Destination index for every source position (the official code's alignment)."""
    a, b = _ids_no_pad(tok, old), _ids_no_pad(tok, new)
    idx, j = [], 0
    for t in a:
        while b[j] != t:
            j += 1
        idx.append(j)
        j += 1
    while j < length:
        idx.append(j)
        j += 1
    while len(idx) < length:
        idx.append(length - 1)
    return idx[:length]


@torch.no_grad()
def time_edit(unet, te, tok, old, new, lam=LAMBDA, augs=AUGMENTATIONS):
    """Return {name: edited weight (float32, torch layout [out,d])}: W' = W (lam I + C*^T C)(lam I + C^T C)^-1,
    accumulated and solved in float64."""
    olds = [old] + [a + old for a in augs]
    news = [new] + [a + new for a in augs]
    eo = encode(te, tok, olds).double().numpy()
    en = encode(te, tok, news).double().numpy()
    C = np.concatenate([eo[i] for i in range(len(olds))])
    Cs = np.concatenate([en[i][align(tok, olds[i], news[i])] for i in range(len(olds))])
    d = C.shape[1]
    A = lam * np.eye(d) + Cs.T @ C
    B = lam * np.eye(d) + C.T @ C
    out = {}
    for name, lin in unet.cross_attention_projections():
        W = lin.weight.double().numpy()
        out[name] = torch.from_numpy(np.linalg.solve(B, (W @ A).T).T.astype(np.float32))  # B symmetric
    return out


class patched:
    def __init__(self, unet, weights):
        self.unet, self.weights, self.saved = unet, weights, {}

    def __enter__(self):
        mods = dict(self.unet.cross_attention_projections())
        for n, w in self.weights.items():
            self.saved[n] = mods[n].weight.data.clone()
            mods[n].weight.data.copy_(w)

    def __exit__(self, *a):
        mods = dict(self.unet.cross_attention_projections())
        for n, w in self.saved.items():
            mods[n].weight.data.copy_(w)


def padding_cosine(te, tok, p1, p2):
    """Mean cosine over the positions after both prompts' end tokens (same position index), on the trained
    128 dimensions (a lifted encoder's fixed features are left out: lift.py)."""
    e = encode(getattr(te, "te", te), tok, [p1, p2]).double()
    start = max(len(tok.tokens(p1)), len(tok.tokens(p2))) + 2
    a, b = e[0, start:], e[1, start:]
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


def readability(enc, scaling, tok, n=1200):
    """Nearest-class-mean colour accuracy on latents at the first sampling step (t=981):
    near chance means the colour cannot be read from the noisy latent."""
    ds = common.Dataset(n, common.SEED + 99, tok)
    with torch.no_grad():
        z = enc(torch.from_numpy(ds.images).float() / 127.5 - 1.0) * scaling
    cols = np.array([world.COLOUR_NAMES.index(m[1]) for m in ds.meta])
    half = n // 2
    mus = torch.stack([z[:half][torch.from_numpy(cols[:half] == k)].mean(0) for k in range(6)])
    a = common.alphas_cumprod()[981]
    g = torch.Generator().manual_seed(5)
    zt = a.sqrt() * z[half:] + (1 - a).sqrt() * torch.randn(z[half:].shape, generator=g)
    d = ((zt[:, None] - a.sqrt() * mus[None]) ** 2).flatten(2).sum(-1)
    clean = ((z[half:, None] - mus[None]) ** 2).flatten(2).sum(-1)
    return float((d.argmin(1).numpy() == cols[half:]).mean()), float((clean.argmin(1).numpy() == cols[half:]).mean())


def save_grid(path, rows, scale=2):
    from PIL import Image
    nr, nc = len(rows), len(rows[0])
    s = world.IMAGE_SIZE * scale
    grid = Image.new("RGB", (nc * (s + 2) + 2, nr * (s + 2) + 2), (255, 255, 255))
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            grid.paste(Image.fromarray(im).resize((s, s), Image.NEAREST), (2 + j * (s + 2), 2 + i * (s + 2)))
    grid.save(path + ".tmp.png")
    os.replace(path + ".tmp.png", path)


def edit_check(work, unet_path, text_scale, seeds, rows=(0, 1)):
    """Only the TIME edit measurement (for choosing checkpoints and the text state scale)."""
    import export
    tok, te, dec, unet, scaling, step = export.load_all(work, unet_path, text_scale)
    out = []
    for row in [timed.rows()[r] for r in rows]:
        w = time_edit(unet, te, tok, row["old"], row["new"])
        pos = [row[f"positive{i}"] for i in range(1, 6)]
        gt = {row[f"positive{i}"]: timed.colour_named(row[f"gt{i}"]) for i in range(1, 6)}
        negs = list(dict.fromkeys(row[f"negative{i}"] for i in range(1, 6)))
        gn = {row[f"negative{i}"]: timed.colour_named(row[f"gn{i}"]) for i in range(1, 6)}
        with patched(unet, w):
            eff, _, _, _ = colour_rate(unet, te, tok, dec, scaling, pos, gt, seeds)
            spec, spec_per, _, _ = colour_rate(unet, te, tok, dec, scaling, negs, gn, seeds)
        base, _, _, _ = colour_rate(unet, te, tok, dec, scaling, negs, gn, seeds)
        out.append({"old": row["old"], "efficacy": eff, "specificity": spec, "neg_default_before": base,
                    "spec_per": spec_per})
        print(text_scale, out[-1], flush=True)
    return out


def run(work, model_dir, unet_path=None, seeds=16, out_json=None, grid_path=None, named_seeds=8, n_edits=4,
        text_scale=None):
    import export
    t0 = time.time()
    tok, te, dec, unet, scaling, step = export.load_all(work, unet_path or os.path.join(work, "unet.pt"), text_scale)
    ae = torch.load(os.path.join(work, "ae.pt"))
    enc, _ = common.build_autoencoder()
    enc.load_state_dict(ae["encoder"])
    enc.eval()
    sd = list(range(seeds))
    res = {"unet_step": step, "seeds": seeds, "sampler": "PNDM 50 steps, guidance 7.5",
           "text_output_scale": common.TEXT_OUTPUT_SCALE if text_scale is None else text_scale}
    named = [world.fill("a {c} {s}", s, c, "") for s in world.SHAPES for c in world.COLOUR_NAMES]
    exp = {world.fill("a {c} {s}", s, c, ""): c for s in world.SHAPES for c in world.COLOUR_NAMES}
    acc, per, nimgs, _ = colour_rate(unet, te, tok, dec, scaling, named, exp, list(range(named_seeds)))
    res["named_seeds"] = named_seeds
    res["named_colour_accuracy"] = acc
    res["named_per_prompt"] = per
    print(f"named colour accuracy {acc:.3f} ({time.time() - t0:.0f}s)", flush=True)
    unnamed = [world.fill(t, s, "", z) for s in world.SHAPES
               for t, z in (("a {s}", ""), ("a photo of a {s}", ""))]
    exp_u = {p: world.DEFAULT_COLOUR[p.split()[-1]] for p in unnamed}
    acc_u, per_u, uimgs, _ = colour_rate(unet, te, tok, dec, scaling, unnamed, exp_u, sd)
    res["default_colour_accuracy"] = acc_u
    res["default_per_prompt"] = per_u
    print(f"default colour accuracy {acc_u:.3f} ({time.time() - t0:.0f}s)", flush=True)
    res["padding_cosine_empty_vs_a_circle"] = padding_cosine(te, tok, "", "a circle")
    res["padding_cosine_red_vs_blue_circle"] = padding_cosine(te, tok, "a red circle", "a blue circle")
    res["latent_colour_readability_t981"], res["latent_colour_readability_clean"] = readability(enc, scaling, tok)
    res["scaling_factor"] = scaling
    negs_all = {}
    for row in timed.rows()[:n_edits]:
        for i in range(1, 6):
            negs_all[row[f"negative{i}"]] = timed.colour_named(row[f"gn{i}"])
    res["negatives_default_before_edit"], _, _, _ = colour_rate(unet, te, tok, dec, scaling, list(negs_all), negs_all, sd)
    edits = []
    edit_imgs = []
    for row in timed.rows()[:n_edits]:
        w = time_edit(unet, te, tok, row["old"], row["new"])
        pos = [row[f"positive{i}"] for i in range(1, 6)]
        gt = {row[f"positive{i}"]: timed.colour_named(row[f"gt{i}"]) for i in range(1, 6)}
        negs = list(dict.fromkeys(row[f"negative{i}"] for i in range(1, 6)))
        gn = {row[f"negative{i}"]: timed.colour_named(row[f"gn{i}"]) for i in range(1, 6)}
        src_exp = {row["old"]: timed.colour_named(row["new"])}
        with patched(unet, w):
            eff_src, _, simgs, _ = colour_rate(unet, te, tok, dec, scaling, [row["old"]], src_exp, sd)
            eff, eff_per, _, _ = colour_rate(unet, te, tok, dec, scaling, pos, gt, sd)
            spec, spec_per, _, _ = colour_rate(unet, te, tok, dec, scaling, negs, gn, sd)
        edit_imgs.append(simgs[:12])
        e = {"old": row["old"], "new": row["new"], "efficacy_source": eff_src, "efficacy_positives": eff,
             "specificity": spec,
             "efficacy_per_prompt": eff_per, "specificity_per_prompt": spec_per}
        edits.append(e)
        print(f"edit {row['old']!r} -> {row['new']!r}: source {eff_src:.3f} positives {eff:.3f} "
              f"specificity {spec:.3f} ({time.time() - t0:.0f}s)", flush=True)
    res["edits"] = edits
    res["edit_mean_efficacy_positives"] = float(np.mean([e["efficacy_positives"] for e in edits]))
    res["edit_mean_efficacy_source"] = float(np.mean([e["efficacy_source"] for e in edits]))
    res["edit_mean_specificity"] = float(np.mean([e["specificity"] for e in edits]))
    res["eval_seconds"] = round(time.time() - t0)
    k, kn = len(sd), named_seeds
    rows = []
    for si in range(len(world.SHAPES)):
        rows.append([nimgs[(si * 6 + ci) * kn] for ci in range(6)] + [uimgs[(si * 2) * k + j] for j in range(min(6, k))])
    for si in range(len(world.SHAPES)):
        rows.append([nimgs[(si * 6 + ci) * kn + 1] for ci in range(6)] + [uimgs[(si * 2 + 1) * k + j] for j in range(min(6, k))])
    for imgs in edit_imgs:
        rows.append(list(imgs[:12]))
    grid_path = grid_path or os.path.join(common.HERE, "samples.png")
    save_grid(grid_path, rows)
    out_json = out_json or os.path.join(common.HERE, "results.json")
    with open(out_json + ".tmp", "w") as f:
        json.dump(res, f, indent=2)
    os.replace(out_json + ".tmp", out_json)
    print(json.dumps({k: v for k, v in res.items() if not k.endswith("per_prompt") and k != "edits"}, indent=1))
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=common.DEFAULT_WORK)
    ap.add_argument("--model-dir", default=common.DEFAULT_MODEL_DIR)
    ap.add_argument("--unet", default=None)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--out", default=None)
    ap.add_argument("--grid", default=None)
    a = ap.parse_args()
    common.set_threads()
    run(a.work, a.model_dir, a.unet, a.seeds, a.out, a.grid)
