"""Shared recipe constants, data set construction, noise schedule and model builders."""
import os

import numpy as np
import torch

import world
from clip_bpe import ClipBpe
from nets import Decoder, Encoder, ImageTower, TextEncoder, UNet2DConditionModel

SEED = 20240917
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DEFAULT_WORK = os.path.join(HERE, "out")  # ignored by git (.gitignore: out/)
DEFAULT_MODEL_DIR = os.path.join(REPO, "models", "toy-shapes")

TEXT = dict(d=128, layers=2, heads=4, ff=256)
UNET = dict(channels=(32, 64, 64, 64), heads=4, groups=8, layers=2)
LATENT_CHANNELS = 4
VAE_FACTOR = 4
EMBED_DIM = 128  # contrastive space
# Exported text states are the trained ones times TEXT_OUTPUT_SCALE (final LayerNorm gain and bias), and the
# UNet's 32 cross-attention K/V weights are divided by it, so generation is exactly unchanged; only the scale
# at which TIME's lambda = 0.1 regularizes changes (see models/README.md, "Text state scale").
TEXT_OUTPUT_SCALE = 0.1
# Widen the exported text states with fixed random Fourier features of themselves and pad the UNet's K/V weights
# with zero rows (lift.py; models/README.md, "Text-state lift"). The generator is unchanged and TIME's closed
# form then works in 128 + features = 512 > 308 dimensions. bandwidth: sigma in units of the median distance
# between training-caption states, chosen on validation prompts outside toy_timed.csv. None exports the plain
# 128-wide folder.
TEXT_LIFT = dict(features=384, bandwidth=0.35, seed=SEED)
NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012
CAPTION_DROPOUT = 0.1
DATASET_SIZE = 24000


def set_threads():
    torch.set_num_threads(int(os.environ.get("TOY_THREADS", "1")))
    torch.set_num_interop_threads(1)


def alphas_cumprod():
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, NUM_TRAIN_TIMESTEPS, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, 0)


def build_tokenizer():
    return ClipBpe.build(world.vocabulary_words())


def build_text_encoder(tok):
    return TextEncoder(len(tok.encoder), TEXT["d"], TEXT["layers"], TEXT["heads"], TEXT["ff"])


def build_unet():
    return UNet2DConditionModel(channels=UNET["channels"], cross_dim=TEXT["d"], heads=UNET["heads"],
                                groups=UNET["groups"], in_ch=LATENT_CHANNELS, layers=UNET["layers"])


def build_image_tower():
    return ImageTower(EMBED_DIM)


def build_autoencoder():
    return Encoder(LATENT_CHANNELS), Decoder(LATENT_CHANNELS)


class Dataset:
    """A fixed pool of rendered scenes; captions are drawn per use from the templates that
    match the scene (colour-naming templates only for scenes whose caption names the colour)."""

    def __init__(self, n, seed, tok):
        rng = np.random.default_rng(seed)
        self.images = np.zeros((n, 3, world.IMAGE_SIZE, world.IMAGE_SIZE), np.uint8)
        self.meta = []
        for i in range(n):
            s, c, z, named, cx, cy = world.sample_scene(rng)
            self.images[i] = world.render(s, c, z, cx, cy).transpose(2, 0, 1)
            self.meta.append((s, c, z, named))
        self.captions = []
        index = {}
        self.options = []
        for s, c, z, named in self.meta:
            key = (s, c, z, named)
            if key not in index:
                temps = world.NAMED_TEMPLATES if named else world.UNNAMED_TEMPLATES
                ids = []
                for t in temps:
                    cap = world.fill(t, s, c, z)
                    if cap not in self.captions:
                        self.captions.append(cap)
                    ids.append(self.captions.index(cap))
                index[key] = ids
            self.options.append(index[key])
        self.token_ids = torch.tensor([tok.encode(c) for c in self.captions], dtype=torch.int64)
        self.empty_ids = torch.tensor([tok.encode("")], dtype=torch.int64)

    def batch(self, rng, bs):
        idx = rng.integers(len(self.meta), size=bs)
        caps = np.array([self.options[i][rng.integers(len(self.options[i]))] for i in idx])
        imgs = torch.from_numpy(self.images[idx]).float() / 127.5 - 1.0
        return idx, imgs, torch.from_numpy(caps)
