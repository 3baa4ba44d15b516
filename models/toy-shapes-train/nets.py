"""Networks: a CLIP-style text encoder (and the small image tower it is trained against),
a small autoencoder, and a UNet with the SD 1.x block structure (diffusers module names, so
the ONNX node names match SD exports, e.g. /down_blocks.0/attentions.0/transformer_blocks.0/attn2/to_k/MatMul).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# ------------------------------------------------------------------ text encoder (CLIP text tower)


class ClipAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x, mask):
        b, s, d = x.shape
        h = self.heads
        q = self.q_proj(x).reshape(b, s, h, d // h).transpose(1, 2)
        k = self.k_proj(x).reshape(b, s, h, d // h).transpose(1, 2)
        v = self.v_proj(x).reshape(b, s, h, d // h).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) * (d // h) ** -0.5 + mask, -1)
        return self.out_proj((a @ v).transpose(1, 2).reshape(b, s, d))


class ClipMlp(nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.fc1 = nn.Linear(d, ff)
        self.fc2 = nn.Linear(ff, d)

    def forward(self, x):
        x = self.fc1(x)
        return self.fc2(x * torch.sigmoid(1.702 * x))  # quick_gelu, as CLIP


class ClipLayer(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(d)
        self.self_attn = ClipAttention(d, heads)
        self.layer_norm2 = nn.LayerNorm(d)
        self.mlp = ClipMlp(d, ff)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class TextEncoder(nn.Module):
    """input_ids [B,S] (int32 or int64) -> (last_hidden_state [B,S,d], pooler_output [B,d])."""

    def __init__(self, vocab_size, d, layers, heads, ff, max_positions=77):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d)
        self.position_embedding = nn.Embedding(max_positions, d)
        nn.init.normal_(self.token_embedding.weight, std=0.02)  # CLIP's init (N(0,1) kills the text)
        nn.init.normal_(self.position_embedding.weight, std=0.01)
        self.layers = nn.ModuleList([ClipLayer(d, heads, ff) for _ in range(layers)])
        self.final_layer_norm = nn.LayerNorm(d)
        mask = torch.full((max_positions, max_positions), -1e9).triu(1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, input_ids):
        ids = input_ids.long()
        s = ids.shape[1]
        x = self.token_embedding(ids) + self.position_embedding.weight[:s].unsqueeze(0)
        mask = self.causal_mask[:s, :s]
        for layer in self.layers:
            x = layer(x, mask)
        x = self.final_layer_norm(x)
        # CLIP's pooler: the state at the first end token (the largest id).
        eos = ids.argmax(-1)
        pooled = torch.gather(x, 1, eos[:, None, None].expand(-1, 1, x.shape[2])).squeeze(1)
        return x, pooled


class ImageTower(nn.Module):
    """The small image encoder the text encoder is trained against (not exported)."""

    def __init__(self, out_dim):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(64, 64, 3, 2, 1), nn.SiLU(),
            nn.Flatten(), nn.Linear(64 * 16, 256), nn.SiLU(), nn.Linear(256, out_dim))

    def forward(self, x):
        return self.net(x)


# ------------------------------------------------------------------ autoencoder (factor 4)


class AeRes(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c)
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1)
        self.norm2 = nn.GroupNorm(8, c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Encoder(nn.Module):
    def __init__(self, latent=4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, 2, 1), AeRes(64),
            nn.Conv2d(64, 64, 3, 2, 1), AeRes(64),
            nn.GroupNorm(8, 64), nn.SiLU(), nn.Conv2d(64, latent, 3, 1, 1))

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """latent_sample [B,4,h,w] (unscaled) -> sample [B,3,4h,4w] in [-1,1]."""

    def __init__(self, latent=4):
        super().__init__()
        self.conv_in = nn.Conv2d(latent, 64, 3, 1, 1)
        self.res0 = AeRes(64)
        self.res1 = AeRes(64)
        self.up1 = nn.Conv2d(64, 64, 3, 1, 1)
        self.res2 = AeRes(64)
        self.up2 = nn.Conv2d(64, 32, 3, 1, 1)
        self.res3 = AeRes(32)
        self.norm_out = nn.GroupNorm(8, 32)
        self.conv_out = nn.Conv2d(32, 3, 3, 1, 1)
        self.clamp_output = False

    def forward(self, z):
        x = self.res1(self.res0(self.conv_in(z)))
        x = self.res2(self.up1(F.interpolate(x, scale_factor=2.0, mode="nearest")))
        x = self.res3(self.up2(F.interpolate(x, scale_factor=2.0, mode="nearest")))
        x = self.conv_out(F.silu(self.norm_out(x)))
        return x.clamp(-1.0, 1.0) if self.clamp_output else x


# ------------------------------------------------------------------ UNet (SD 1.x structure)


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    """diffusers Attention: bias-free to_q/to_k/to_v, to_out.0 with bias."""

    def __init__(self, query_dim, heads, cross_dim=None):
        super().__init__()
        self.heads = heads
        kv = cross_dim if cross_dim is not None else query_dim
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(kv, query_dim, bias=False)
        self.to_v = nn.Linear(kv, query_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(query_dim, query_dim), nn.Dropout(0.0)])

    def forward(self, x, context=None):
        ctx = x if context is None else context
        b, n, c = x.shape
        h = self.heads
        q = self.to_q(x).reshape(b, n, h, c // h).transpose(1, 2)
        k = self.to_k(ctx)
        v = self.to_v(ctx)
        m = k.shape[1]
        k = k.reshape(b, m, h, c // h).transpose(1, 2)
        v = v.reshape(b, m, h, c // h).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) * (c // h) ** -0.5, -1)
        out = (a @ v).transpose(1, 2).reshape(b, n, c)
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x):
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, cross_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, cross_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, ctx):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), ctx) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Module):
    def __init__(self, c, heads, cross_dim, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.proj_in = nn.Conv2d(c, c, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(c, heads, cross_dim)])
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x, ctx):
        b, c, hh, ww = x.shape
        res = x
        x = self.proj_in(self.norm(x))
        x = x.permute(0, 2, 3, 1).reshape(b, hh * ww, c)
        for blk in self.transformer_blocks:
            x = blk(x, ctx)
        x = x.reshape(b, hh, ww, c).permute(0, 3, 1, 2)
        return self.proj_out(x) + res


class Downsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 1)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    def __init__(self, cin, cout, temb, layers, attn, heads, cross_dim, groups, downsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, temb, groups) for i in range(layers)])
        self.attentions = nn.ModuleList([Transformer2DModel(cout, heads, cross_dim, groups) for _ in range(layers)]) if attn else None
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if downsample else None

    def forward(self, x, temb, ctx):
        states = []
        for i, r in enumerate(self.resnets):
            x = r(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, ctx)
            states.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            states.append(x)
        return x, states


class UpBlock(nn.Module):
    def __init__(self, cin, prev, cout, temb, layers, attn, heads, cross_dim, groups, upsample):
        super().__init__()
        res = []
        for i in range(layers):
            skip = cin if i == layers - 1 else cout
            rin = prev if i == 0 else cout
            res.append(ResnetBlock2D(rin + skip, cout, temb, groups))
        self.resnets = nn.ModuleList(res)
        self.attentions = nn.ModuleList([Transformer2DModel(cout, heads, cross_dim, groups) for _ in range(layers)]) if attn else None
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if upsample else None

    def forward(self, x, skips, temb, ctx):
        for i, r in enumerate(self.resnets):
            x = r(torch.cat([x, skips.pop()], 1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, ctx)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    def __init__(self, c, temb, heads, cross_dim, groups):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c, temb, groups), ResnetBlock2D(c, c, temb, groups)])
        self.attentions = nn.ModuleList([Transformer2DModel(c, heads, cross_dim, groups)])

    def forward(self, x, temb, ctx):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, ctx)
        return self.resnets[1](x, temb)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear_1 = nn.Linear(cin, cout)
        self.linear_2 = nn.Linear(cout, cout)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class UNet2DConditionModel(nn.Module):
    """sample [B,4,h,w], timestep [B] or [1] (float), encoder_hidden_states [B,S,d] -> [B,4,h,w].
    CrossAttnDown x3 + Down, cross-attention mid block, Up + CrossAttnUp x3: 16 transformer blocks."""

    def __init__(self, channels=(32, 64, 64, 64), cross_dim=128, heads=4, groups=8, in_ch=4, layers=2):
        super().__init__()
        c0 = channels[0]
        temb = c0 * 4
        self.time_dim = c0
        self.conv_in = nn.Conv2d(in_ch, c0, 3, 1, 1)
        self.time_embedding = TimestepEmbedding(c0, temb)
        down = []
        cout = c0
        for i, c in enumerate(channels):
            cin, cout = cout, c
            last = i == len(channels) - 1
            down.append(DownBlock(cin, cout, temb, layers, not last, heads, cross_dim, groups, not last))
        self.down_blocks = nn.ModuleList(down)
        self.mid_block = MidBlock(channels[-1], temb, heads, cross_dim, groups)
        rev = list(reversed(channels))
        up = []
        prev = rev[0]
        for i, c in enumerate(rev):
            cin = rev[min(i + 1, len(rev) - 1)]
            last = i == len(rev) - 1
            up.append(UpBlock(cin, prev, c, temb, layers + 1, i > 0, heads, cross_dim, groups, not last))
            prev = c
        self.up_blocks = nn.ModuleList(up)
        self.conv_norm_out = nn.GroupNorm(groups, c0, eps=1e-5)
        self.conv_out = nn.Conv2d(c0, in_ch, 3, 1, 1)

    def time_proj(self, t):
        # diffusers Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], -1)

    def forward(self, sample, timestep, encoder_hidden_states):
        t = timestep.reshape(-1).expand(sample.shape[0])
        temb = self.time_embedding(self.time_proj(t))
        x = self.conv_in(sample)
        skips = [x]
        for blk in self.down_blocks:
            x, st = blk(x, temb, encoder_hidden_states)
            skips += st
        x = self.mid_block(x, temb, encoder_hidden_states)
        for blk in self.up_blocks:
            x = blk(x, skips, temb, encoder_hidden_states)
        return self.conv_out(F.silu(self.conv_norm_out(x)))

    def cross_attention_projections(self):
        """The 32 (name, Linear) cross-attention to_k/to_v layers in graph order."""
        out = []
        for name, m in self.named_modules():
            if name.endswith("attn2.to_k") or name.endswith("attn2.to_v"):
                out.append((name, m))
        return out
