"""A Stable-Diffusion/ADM-style UNet at digit scale.

It meets the operators real exported denoisers use: GroupNorm + SiLU residual blocks, a sinusoidal
timestep embedding through an MLP, a class embedding (with a null class for classifier-free guidance)
added to it, strided-conv downsampling, nearest-neighbour upsampling (Resize), skip concatenation, and
multi-head self-attention (MatMul/Softmax) at the lowest resolution.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim, max_period=10000.0):
    """Sinusoidal embedding of a float timestep, [B] -> [B, dim] (cos first, as diffusers' flip_sin_to_cos)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim, groups=8):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    def __init__(self, ch, heads=4, groups=8):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # [B, heads, d, HW]
        scale = 1.0 / math.sqrt(c // self.heads)
        attn = torch.softmax(torch.matmul(q.transpose(-1, -2), k) * scale, dim=-1)  # [B, heads, HW, HW]
        out = torch.matmul(v, attn.transpose(-1, -2)).reshape(b, c, h, w)
        return x + self.proj(out)


class DigitsUNet(nn.Module):
    """16x16 -> 8x8 -> 4x4 UNet. `class_labels` take values 0..num_classes, the last being the null class."""

    def __init__(self, ch=(32, 64, 96), num_classes=10, emb_dim=128):
        super().__init__()
        c1, c2, c3 = ch
        self.num_classes = num_classes
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(c1, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim)
        self.conv_in = nn.Conv2d(1, c1, 3, padding=1)
        self.down1 = ResBlock(c1, c1, emb_dim)
        self.ds1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.down2 = ResBlock(c1, c2, emb_dim)
        self.ds2 = nn.Conv2d(c2, c2, 3, stride=2, padding=1)
        self.mid1 = ResBlock(c2, c3, emb_dim)
        self.attn = SelfAttention(c3)
        self.mid2 = ResBlock(c3, c3, emb_dim)
        self.us2 = nn.Conv2d(c3, c3, 3, padding=1)
        self.up2 = ResBlock(c3 + c2, c2, emb_dim)
        self.us1 = nn.Conv2d(c2, c2, 3, padding=1)
        self.up1 = ResBlock(c2 + c1, c1, emb_dim)
        self.norm_out = nn.GroupNorm(8, c1)
        self.conv_out = nn.Conv2d(c1, 1, 3, padding=1)
        self.t_dim = c1

    def forward(self, sample, timestep, class_labels):
        emb = self.time_mlp(timestep_embedding(timestep, self.t_dim)) + self.class_emb(class_labels)
        h0 = self.conv_in(sample)
        h1 = self.down1(h0, emb)                       # 16x16
        h2 = self.down2(self.ds1(h1), emb)             # 8x8
        h = self.mid1(self.ds2(h2), emb)               # 4x4
        h = self.mid2(self.attn(h), emb)
        h = self.us2(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.up2(torch.cat([h, h2], dim=1), emb)
        h = self.us1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.up1(torch.cat([h, h1], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_params(m):
    return sum(p.numel() for p in m.parameters())
