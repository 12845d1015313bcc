"""A small Vision Transformer built from timm's VisionTransformer.

At width 1: embedding 192, depth 9, 3 heads (head dim 64), MLP ratio 2, class token, patch 4 on
32x32 inputs (64 tokens) and patch 16 on 224x224 (196 tokens); about 2.7M parameters, in the range
of the ViT-Lite models used for CIFAR. ``width`` scales the head dimension, so the embedding stays
divisible by the number of heads.

timm builds q/k/v, the attention projection, the MLP and the head from plain nn.Linear and the
patch embedding from nn.Conv2d (no nn.MultiheadAttention, whose out_proj reads .weight directly),
so every prunable weight can be swapped for a masked layer.
"""
from __future__ import annotations

import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from benchmark.core.models.common import scaled

NUM_HEADS = 3
DEPTH = 9
MLP_RATIO = 2.0


def vit(*, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    patch = 4 if image_size <= 64 else 16
    if image_size % patch:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
    head_dim = scaled(64, width, minimum=8)
    return VisionTransformer(
        img_size=image_size, patch_size=patch, in_chans=in_channels, num_classes=num_classes,
        embed_dim=NUM_HEADS * head_dim, depth=DEPTH, num_heads=NUM_HEADS, mlp_ratio=MLP_RATIO,
        qkv_bias=True, class_token=True, global_pool="token",
        drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)
