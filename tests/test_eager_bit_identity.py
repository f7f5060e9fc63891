"""The eager model computes, bit for bit, the functional pipeline of ``reference.py`` on the weight tensors: the math
the model ran before its layers were called as modules (``mlp_ref`` / ``layer_norm_ref`` / ``attention_ref`` on
``.weight`` / ``.bias``). Written out here independently of the model code, on the big_vision fixtures' weights and
images, so a change in the eager path's values (not only beyond a tolerance) fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sovit_hf.configuration_sovit import pool_type_spec
from sovit_hf.conversion.big_vision import load_big_vision
from sovit_hf.reference import attention_ref, layer_norm_ref, mlp_ref
from tests.conftest import BIG_VISION_FIXTURES, perturb_, tiny_config

APPROXIMATE = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}


def _ln(norm, x, residual=None):
    return layer_norm_ref(x, norm.weight, norm.bias, norm.eps, residual=residual)


def _mlp(mlp, x, approximate):
    return mlp_ref(x, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias, approximate=approximate)


def _attention(attn, x, kv):
    def heads(t):  # (B, L, W) -> (B, H, L, D)
        return t.view(t.shape[0], t.shape[1], attn.num_heads, attn.head_dim).transpose(1, 2)

    q = heads(F.linear(x, attn.q_proj.weight, attn.q_proj.bias))
    k = heads(F.linear(kv, attn.k_proj.weight, attn.k_proj.bias))
    v = heads(F.linear(kv, attn.v_proj.weight, attn.v_proj.bias))
    out, _ = attention_ref(q, k, v, None, scale=attn.head_dim**-0.5)
    out = out.transpose(1, 2).contiguous().reshape(x.shape[0], x.shape[1], -1)  # (B, Lq, H*D)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)


def functional_forward(model, pixels):
    """SoViTModel's forward as weight-tensor functions: (last_hidden_state, pooler_output)."""
    config, emb = model.config, model.embeddings
    approximate = APPROXIMATE[config.hidden_act]
    x = F.conv2d(pixels, emb.patch_embedding.weight, emb.patch_embedding.bias, stride=config.patch_size)
    x = x.flatten(2).transpose(1, 2)  # (B, N, W)
    x = x + emb.position_embedding_for((config.grid_size, config.grid_size), False)
    if emb.cls_token is not None:
        x = torch.cat([emb.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    for layer in model.encoder.layers:
        normed = _ln(layer.layer_norm1, x)
        attn = _attention(layer.self_attn, normed, normed)
        normed = _ln(layer.layer_norm2, attn, residual=x)
        x = (attn + x) + _mlp(layer.mlp, normed, approximate)
    encoded = _ln(model.post_layernorm, x)
    pooling = pool_type_spec(config.pool_type).pooling
    if pooling == "map":
        head = model.head
        probe = head.probe.expand(encoded.shape[0], -1, -1)
        y = _attention(head.attention, probe, encoded)
        pooled = (y + _mlp(head.mlp, _ln(head.layernorm, y), approximate))[:, 0]
    elif pooling == "mean":
        pooled = encoded.mean(dim=1)
    else:
        pooled = encoded[:, 0]
    return encoded, pooled


@pytest.mark.parametrize("name", ["vit_map_unrolled", "vit_gap_scan_bf16"])
def test_eager_forward_is_bit_identical_on_the_big_vision_fixtures(name):
    model, _ = load_big_vision(BIG_VISION_FIXTURES / f"{name}.npz")
    model = model.sovit.eval()
    model.set_attn_implementation("eager")
    ref = dict(np.load(BIG_VISION_FIXTURES / f"{name}.ref.npz"))
    pixels = torch.from_numpy(ref["image_nhwc"]).permute(0, 3, 1, 2)  # NHWC -> NCHW
    with torch.no_grad():
        out = model(pixels)
        encoded, pooled = functional_forward(model, pixels)
    assert torch.equal(out.last_hidden_state, encoded)
    assert torch.equal(out.pooler_output, pooled)


@pytest.mark.parametrize("pool_type", ["map", "gap", "tok", "0"])
def test_eager_forward_and_gradients_are_bit_identical_for_every_pool_type(pool_type):
    from sovit_hf import SoViTModel

    model = perturb_(SoViTModel(tiny_config(pool_type=pool_type, attn_implementation="eager")), seed=2)
    pixels = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(1))
    out = model(pixels)
    out.pooler_output.square().sum().backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    encoded, pooled = functional_forward(model, pixels)
    pooled.square().sum().backward()
    assert torch.equal(out.last_hidden_state, encoded)
    assert torch.equal(out.pooler_output, pooled)
    for n, p in model.named_parameters():
        assert torch.equal(got[n], p.grad), n
