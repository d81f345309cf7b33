"""The skeleton transformer (MAMP's encoder): token layout, one block against a hand computation,
the pooled feature, its error messages and the layer numbering for layer-wise lr decay."""

from __future__ import annotations

import math

import pytest
import torch

from skelctl.models import build_encoder
from skelctl.models.transformer import Block, drop_path, fold_bodies, patchify
from skelctl.skeletons import KINECT20, NTU25, get_layout

from conftest import gen

SMALL = {"dim": 16, "depth": 2, "heads": 4, "t_patch": 2, "frames": 8}


@pytest.mark.parametrize("layout, persons", [(NTU25, 2), (KINECT20, 1),
                                             (get_layout("coco17-2d"), 2)],
                         ids=["ntu25", "kinect20", "coco17-2d"])
def test_shapes_for_layouts_frames_and_bodies(layout, persons):
    encoder = build_encoder("transformer", layout, persons, **SMALL).eval()
    x = torch.randn(3, layout.dims, 8, layout.num_joints, persons, generator=gen(1))
    with torch.no_grad():
        tokens = encoder.embed(x)
        feature_map = encoder.features(x)
        out = encoder(x)
    assert tokens.shape == (3 * persons, 4, layout.num_joints, 16)  # 8 frames / 2 per token
    assert feature_map.shape == (3, persons, 4, layout.num_joints, 16)
    assert out.shape == (3, 16) and encoder.out_dim == 16
    torch.testing.assert_close(encoder.pool(feature_map), out, rtol=0, atol=0)
    assert encoder.patch_embed.in_features == 2 * layout.dims


def test_default_is_mamps_size_and_token_grid():
    encoder = build_encoder("transformer", NTU25, 2)
    assert (encoder.out_dim, len(encoder.blocks), encoder.blocks[0].attn.heads) == (256, 8, 8)
    assert encoder.temporal_position.shape == (1, 30, 1, 256)  # 120 frames / 4
    assert encoder.spatial_position.shape == (1, 1, 25, 256)
    block = 4 * 256 + (256 * 768 + 768) + (256 * 256 + 256) + (256 * 1024 + 1024) \
        + (1024 * 256 + 256)
    expected = 8 * block + (12 * 256 + 256) + 25 * 256 + 30 * 256 + 2 * 256
    assert sum(p.numel() for p in encoder.parameters()) == expected == 6_336_000
    with torch.no_grad():
        assert encoder.features(torch.randn(1, 3, 120, 25, 2)).shape == (1, 2, 30, 25, 256)


def test_patchify_is_a_joints_values_frame_by_frame():
    x = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).view(2, 4, 3, 3)  # (B, T, V, C)
    patches = patchify(x, 2)
    assert patches.shape == (2, 2, 3, 6)
    # batch 1, second token time (frames 2 and 3), joint 1: its xyz at frame 2, then at 3
    assert patches[1, 1, 1].tolist() == x[1, 2, 1].tolist() + x[1, 3, 1].tolist()
    folded = fold_bodies(torch.randn(2, 3, 4, 5, 2))
    assert folded.shape == (4, 4, 5, 3)


def test_embed_adds_both_positions_and_encode_tokens_gives_the_features():
    torch.manual_seed(0)
    encoder = build_encoder("transformer", NTU25, 2, **SMALL).eval()
    x = torch.randn(2, 3, 8, 25, 2, generator=gen(3))
    with torch.no_grad():
        tokens = encoder.embed(x)
        plain = encoder.patch_embed(patchify(fold_bodies(x), 2))
        torch.testing.assert_close(tokens - plain,
                                   (encoder.spatial_position + encoder.temporal_position)
                                   .expand_as(tokens), rtol=1e-5, atol=1e-6)
        encoded = encoder.encode_tokens(tokens.flatten(1, 2))
        torch.testing.assert_close(encoded.view(2, 2, 4, 25, 16), encoder.features(x),
                                   rtol=0, atol=0)
    # bodies are folded into the batch: swapping them swaps their feature maps
    with torch.no_grad():
        swapped = encoder.features(x.flip(-1))
        torch.testing.assert_close(swapped[:, 0], encoder.features(x)[:, 1], rtol=1e-5,
                                   atol=1e-6)


def layer_norm(x, norm):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased, as LayerNorm
    return (x - mean) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias


def test_one_block_by_hand():
    torch.manual_seed(0)
    dim, heads, width = 8, 2, 4
    block = Block(dim, heads, mlp_ratio=2.0).eval()
    with torch.no_grad():
        for norm in (block.norm1, block.norm2):  # not the identity of the initialisation
            norm.weight.normal_(1.0, 0.3)
            norm.bias.normal_(0.0, 0.3)
        for linear in (block.attn.qkv, block.attn.proj, *block.mlp[::2]):
            linear.bias.normal_(0.0, 0.3)
    x = torch.randn(2, 5, dim, generator=gen(4))
    with torch.no_grad():
        h = layer_norm(x, block.norm1)
        qkv = h @ block.attn.qkv.weight.T + block.attn.qkv.bias
        q, k, v = qkv[..., :dim], qkv[..., dim:2 * dim], qkv[..., 2 * dim:]
        heads_out = []
        for i in range(heads):
            cols = slice(i * width, (i + 1) * width)
            scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(width)
            weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
            weights = weights / weights.sum(dim=-1, keepdim=True)
            heads_out.append(weights @ v[..., cols])
        attended = torch.cat(heads_out, dim=-1) @ block.attn.proj.weight.T + block.attn.proj.bias
        x1 = x + attended
        h2 = layer_norm(x1, block.norm2)
        fc1, fc2 = block.mlp[0], block.mlp[2]
        z = h2 @ fc1.weight.T + fc1.bias
        gelu = 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))
        expected = x1 + gelu @ fc2.weight.T + fc2.bias
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_feature_is_the_mean_over_bodies_with_a_zero_second_body():
    torch.manual_seed(0)
    encoder = build_encoder("transformer", NTU25, 2, **SMALL).eval()
    x = torch.randn(2, 3, 8, 25, 2, generator=gen(5))
    x[..., 1] = 0  # one person: the second body is zeros
    with torch.no_grad():
        feature_map = encoder.features(x)
        out = encoder(x)
        first, second = feature_map[:, 0].mean(dim=(1, 2)), feature_map[:, 1].mean(dim=(1, 2))
        torch.testing.assert_close(out, (first + second) / 2, rtol=1e-5, atol=1e-6)
        # the zero body counts: the feature is not the first body's alone
        assert (out - first).abs().max() > 1e-3
        torch.testing.assert_close(first, encoder(x[..., :1]), rtol=1e-5, atol=1e-6)


def test_error_messages():
    with pytest.raises(ValueError, match=r"frames \(10\) must be a multiple of t_patch \(4\)"):
        build_encoder("transformer", NTU25, 2, frames=10)
    with pytest.raises(ValueError, match=r"dim \(30\) must be a multiple of heads \(8\)"):
        build_encoder("transformer", NTU25, 2, dim=30)
    with pytest.raises(ValueError, match=r"drop_path \(1.0\) must be below 1"):
        build_encoder("transformer", NTU25, 2, drop_path=1.0)
    encoder = build_encoder("transformer", NTU25, 2, **SMALL)
    with pytest.raises(ValueError, match="transformer built for 8 frames .* got 12: resample "
                                         "the clips to 8 frames or build it with frames=12"):
        encoder(torch.zeros(1, 3, 12, 25, 2))
    with pytest.raises(ValueError, match="input has 9 frames, not a multiple of t_patch"):
        encoder(torch.zeros(1, 3, 9, 25, 2))
    with pytest.raises(ValueError, match=r"built for 3 coordinates of 25 joints, got input of "
                                         r"shape \(1, 3, 8, 20, 2\)"):
        encoder(torch.zeros(1, 3, 8, 20, 2))
    with pytest.raises(ValueError, match="transformer has no parameter 'head.weight'"):
        encoder.layer_of("head.weight")


def test_layer_of_every_parameter():
    encoder = build_encoder("transformer", NTU25, 2, dim=16, depth=3, heads=2, frames=8)
    assert encoder.num_layers == 4
    layers = {name: encoder.layer_of(name) for name, _ in encoder.named_parameters()}
    expected = {"patch_embed.weight": 0, "patch_embed.bias": 0, "spatial_position": 0,
                "temporal_position": 0, "norm.weight": 4, "norm.bias": 4}
    for i in range(3):
        for name, _ in encoder.blocks[i].named_parameters():
            expected[f"blocks.{i}.{name}"] = i + 1
    assert layers == expected
    assert len([n for n in layers if layers[n] == 2]) == 12  # 2 norms, qkv, proj, 2 MLP layers


def test_stochastic_depth():
    encoder = build_encoder("transformer", NTU25, 2, dim=16, depth=4, heads=2, frames=8,
                            drop_path=0.3)
    assert [b.drop_path for b in encoder.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    torch.manual_seed(0)
    out = drop_path(torch.ones(4000, 3, 5), 0.3, training=True)
    per_sample = out.flatten(1)
    # every sample's branch is kept whole (scaled by 1 / 0.7) or dropped whole
    assert torch.equal(per_sample.amin(dim=1), per_sample.amax(dim=1))
    assert per_sample[:, 0].unique().tolist() == pytest.approx([0.0, 1 / 0.7])
    assert abs((per_sample[:, 0] == 0).float().mean() - 0.3) < 0.03
    x = torch.randn(3, 4)
    assert torch.equal(drop_path(x, 0.3, training=False), x)
    # in eval mode the encoder is deterministic whatever drop_path
    encoder.eval()
    x = torch.randn(2, 3, 8, 25, 2)
    with torch.no_grad():
        assert torch.equal(encoder(x), encoder(x))
