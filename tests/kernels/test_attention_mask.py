"""The Triton attention kernel with a key-padding mask (NaFlex batches), forward and backward.

Two independent checks on ragged batches (each batch row has its own number of real keys) at head_dim 72 and 55:

* against ``reference.attention_ref`` with the same additive mask, in float64, within 2x PyTorch's float32 error
  (``test_attention``'s envelope, taken on each row's real keys);
* against the unmasked problem cut to each row's real keys (masking a key is the same as deleting it): the kernel's
  output and dQ, dK, dV of the real keys pass ``test_attention``'s FlashAttention rule (the float32 envelope) there,
  and the masked keys' dK and dV are exactly 0.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sovit_hf.naflex import key_padding_bias
from sovit_hf.reference import attention_ref
from tests.kernels.helpers import assert_fa_close, grads, randn, upcast
from tests.kernels.test_attention import assert_matches_reference, fp32_envelope

# isort: split
from sovit_hf.kernels.attention import flash_attention, triton_attention_forward  # after the skips


def _masked_case(lengths, heads, seq_q, head_dim, self_attention=True):
    """q (B, H, Lq, D), k, v (B, H, Lk, D) in the model's transposed layout, the (B, Lk) bool key mask."""
    batch, seq_k = len(lengths), max(lengths) + 3  # 3 padding keys past the longest row too
    seq_q = seq_k if self_attention else seq_q
    q = randn(batch, seq_q, heads, head_dim, requires_grad=False).transpose(1, 2).requires_grad_()
    k = randn(batch, seq_k, heads, head_dim, requires_grad=False).transpose(1, 2).requires_grad_()
    v = randn(batch, seq_k, heads, head_dim, requires_grad=False).transpose(1, 2).requires_grad_()
    keep = torch.arange(seq_k, device=q.device)[None] < torch.tensor(lengths, device=q.device)[:, None]  # (B, Lk)
    return q, k, v, keep


CASES = [  # (key lengths per row, heads, query length when not self-attention, head_dim, self-attention)
    ((7, 19, 33), 2, None, 72, True),  # ragged rows, So400m's head dim (64 + 16), tails inside and across tiles
    ((1, 40), 2, None, 55, True),  # a row with one real key; So150m's head dim (one 64 chunk)
    ((5, 26), 3, 1, 72, False),  # the MAP probe: one query over a padded row
]


@pytest.mark.parametrize("lengths, heads, seq_q, head_dim, self_attention", CASES)
def test_masked_attention_matches_reference_with_additive_mask(lengths, heads, seq_q, head_dim, self_attention):
    """Kernel (through the model's attention function and mask) vs ``attention_ref`` with the same additive mask in
    float64, within 2x PyTorch's float32 error: the envelope of ``test_attention`` on each row's real keys (what a
    float32 PyTorch computation of the masked row can be off by; its masked keys' gradients are exactly 0)."""
    q, k, v, keep = _masked_case(lengths, heads, seq_q, head_dim, self_attention)
    mask = key_padding_bias(keep, torch.float32, q.shape[2])  # (B, 1, Lq, Lk) additive, the model's mask
    out, _ = triton_attention_forward(None, q, k, v, mask)  # (B, Lq, H, D)
    dout = torch.randn_like(out)
    dq, dk, dv = grads(out, (q, k, v), dout)
    q64, k64, v64 = upcast(q, k, v)
    ref, _ = attention_ref(q64, k64, v64, mask.double())
    ref = ref.transpose(1, 2)  # (B, Lq, H, D)
    ref_dq, ref_dk, ref_dv = grads(ref, (q64, k64, v64), dout.double())
    seq_k = k.shape[2]
    for b, n in enumerate(lengths):
        rows = slice(b, b + 1)
        outs, dqs, dks, dvs = fp32_envelope(q[rows], k[rows, :, :n], v[rows, :, :n], dout[rows], None)
        padding = (0, 0, 0, seq_k - n)  # (1, H, n, D) -> (1, H, Lk, D), exact zeros for the padding keys
        assert_fa_close("out", out[rows], ref[rows], outs)
        assert_fa_close("dv", dv[rows], ref_dv[rows], [F.pad(t, padding) for t in dvs])
        if n > 1:  # one key: dQ = dK = 0 exactly (test_attention's single-key bound covers it)
            assert_fa_close("dq", dq[rows], ref_dq[rows], dqs)
            assert_fa_close("dk", dk[rows], ref_dk[rows], [F.pad(t, padding) for t in dks])


@pytest.mark.parametrize("lengths, heads, seq_q, head_dim, self_attention", CASES)
def test_masking_a_key_equals_deleting_it(lengths, heads, seq_q, head_dim, self_attention):
    q, k, v, keep = _masked_case(lengths, heads, seq_q, head_dim, self_attention)
    bias = torch.zeros(keep.shape, device=q.device).masked_fill(~keep, float("-inf"))  # (B, Lk), -inf this time
    out = flash_attention(q, k, v, key_padding_mask=bias)  # (B, Lq, H, D)
    dout = torch.randn_like(out)
    dq, dk, dv = grads(out, (q, k, v), dout)
    for b, n in enumerate(lengths):
        rows = slice(b, b + 1)
        qb, kb, vb = q[rows], k[rows, :, :n], v[rows, :, :n]  # the row's real keys only, no mask
        assert_matches_reference((qb, kb, vb), dout[rows], out[rows], (dq[rows], dk[rows, :, :n], dv[rows, :, :n]))
        assert torch.equal(dk[rows, :, n:], torch.zeros_like(dk[rows, :, n:])), "a masked key got a dK"
        assert torch.equal(dv[rows, :, n:], torch.zeros_like(dv[rows, :, n:])), "a masked key got a dV"


def test_no_mask_is_unchanged_and_other_masks_are_refused():
    q, k, v, keep = _masked_case((6, 6), 2, None, 72)
    everything = key_padding_bias(torch.ones_like(keep), torch.float32, q.shape[2])  # all zeros: attend to all
    with torch.no_grad():
        masked, _ = triton_attention_forward(None, q, k, v, everything)
        plain, _ = triton_attention_forward(None, q, k, v, None)
    torch.testing.assert_close(masked, plain, rtol=0, atol=0)
    per_query = torch.zeros(2, 1, q.shape[2], k.shape[2])  # a materialised (B, 1, Lq, Lk) mask: not key padding
    with pytest.raises(NotImplementedError, match="key-padding masks only"):
        triton_attention_forward(None, q, k, v, per_query)
