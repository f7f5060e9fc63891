"""NaFlex (native resolution and aspect ratio) inputs: batch independence on every attention backend, parity with
transformers' own Siglip2VisionModel on its own processor's output, the position-embedding resampling rule, and the
converted folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Siglip2VisionConfig, Siglip2VisionModel
from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

from sovit_hf import SoViTModel
from sovit_hf.conversion.hf_siglip import convert, load_siglip_as_sovit
from sovit_hf.image_processing_sovit_naflex import SoViTNaFlexImageProcessor
from sovit_hf.naflex import resample_pos_embedding_naflex
from tests.conftest import needs_auto_image_processor, perturb_, tiny_config

MAX_ABS = 1e-5  # parity with Siglip2VisionModel, float32 (the SigLIP parity test's bound)
BATCH_RELATIVE = 1e-6  # an image's outputs alone vs in a mixed batch, relative to their scale
SHAPES = [(2, 7), (5, 2), (4, 4), (1, 1), (3, 5)]  # patch grids: wider, taller, the posemb grid, one patch, 3x5


def _naflex_model(pool_type="map", posemb="learn", **overrides) -> SoViTModel:
    """head_dim 72 (So400m's), 2 layers, patch 4, a 4x4 position grid; perturbed so nothing is trivially zero."""
    config = tiny_config(
        hidden_size=144,
        num_attention_heads=2,
        intermediate_size=200,
        patch_size=4,
        image_size=16,
        pool_type=pool_type,
        posemb=posemb,
        **overrides,
    )
    torch.manual_seed(0)
    return perturb_(SoViTModel(config), scale=0.05).eval()


def _batch(shapes, length, patch_dim=48, seed=0):
    """Random patches for each grid, padded with zeros to ``length``: the NaFlex inputs (one dict)."""
    gen = torch.Generator().manual_seed(seed)
    spatial = torch.tensor(shapes)
    counts = spatial.prod(-1)
    mask = torch.arange(length)[None] < counts[:, None]  # (B, L)
    pixels = torch.randn(len(shapes), length, patch_dim, generator=gen) * mask[..., None]
    return {"pixel_values": pixels, "pixel_attention_mask": mask.long(), "spatial_shapes": spatial}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def assert_batch_independent(model: SoViTModel, shapes=SHAPES) -> None:
    """Each image alone (exactly its own h*w tokens, no padding) vs in a padded batch with the others: its pooled
    output and its real tokens agree within BATCH_RELATIVE."""
    length = max(h * w for h, w in shapes) + 3
    batch = _batch(shapes, length)
    with torch.no_grad():
        together = model(**batch)
        for i, (h, w) in enumerate(shapes):
            n = h * w
            alone = model(
                pixel_values=batch["pixel_values"][i : i + 1, :n],
                spatial_shapes=batch["spatial_shapes"][i : i + 1],
            )
            assert _rel(together.pooler_output[i], alone.pooler_output[0]) <= BATCH_RELATIVE, (h, w)
            tokens = together.last_hidden_state[i, :n]
            assert _rel(tokens, alone.last_hidden_state[0, :n]) <= BATCH_RELATIVE, (h, w)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("pool_type", ["map", "gap", "tok"])
def test_image_does_not_depend_on_its_batch(attn, pool_type):
    model = _naflex_model(pool_type)
    model.set_attn_implementation(attn)
    assert_batch_independent(model)


def test_image_does_not_depend_on_its_batch_flex_attention():
    model = _naflex_model("map", num_hidden_layers=1)
    model.set_attn_implementation("flex_attention")
    assert_batch_independent(model, shapes=[(2, 7), (3, 3)])


def test_padding_changes_nothing_but_unmasked_padding_would():
    """The mask is what makes the outputs independent: the same batch with the padding unmasked (the padded tokens
    treated as patches) gives a different embedding for the short image."""
    model = _naflex_model()
    batch = _batch([(2, 3), (4, 4)], 16)
    with torch.no_grad():
        masked = model(**batch).pooler_output[0]
        alone = model(pixel_values=batch["pixel_values"][:1, :6], spatial_shapes=batch["spatial_shapes"][:1])
        unmasked = model(pixel_values=batch["pixel_values"][:1], spatial_shapes=torch.tensor([[4, 4]]))
    assert _rel(masked, alone.pooler_output[0]) <= BATCH_RELATIVE
    assert _rel(masked, unmasked.pooler_output[0]) > 1e-2


def test_resampling_is_bilinear_with_antialias():
    """Each image's grid of the position embedding equals torch's own F.interpolate(bilinear, align_corners=False,
    antialias=True) of the (g, g) grid, up- and downsampling on either axis (PyTorch's separate implementation of
    big_vision's scale_and_translate rule); padding rows take position (0, 0)'s."""
    grid, width = 6, 5
    table = torch.randn(1, grid * grid, width, dtype=torch.float64).float()
    shapes = torch.tensor([[3, 11], [9, 2], [6, 6], [1, 1]])
    length = 40
    resampled = resample_pos_embedding_naflex(table, grid, shapes, length)  # (B, L, W)
    image = table.reshape(1, grid, grid, width).permute(0, 3, 1, 2)  # (1, W, g, g)
    for b, (h, w) in enumerate(shapes.tolist()):
        expected = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        expected = expected[0].permute(1, 2, 0).reshape(h * w, width)  # row-major
        torch.testing.assert_close(resampled[b, : h * w], expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(resampled[b, h * w :], expected[:1].expand(length - h * w, -1), rtol=1e-6, atol=1e-6)


def test_fixed_size_path_is_untouched_by_naflex_arguments():
    """A square image through the conv path and the same image as patches with its full grid give the same tokens
    (the stem conv is the Dense on (p, p, C)-flattened patches; the grid equals the posemb grid: no resampling)."""
    model = _naflex_model()
    pixels = torch.randn(2, 3, 16, 16)
    patches = pixels.reshape(2, 3, 4, 4, 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 48)  # (B, gh*gw, p*p*C)
    with torch.no_grad():
        square = model(pixels)
        naflex = model(pixel_values=patches, spatial_shapes=torch.tensor([[4, 4], [4, 4]]))
    torch.testing.assert_close(naflex.last_hidden_state, square.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(naflex.pooler_output, square.pooler_output, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(spatial_shapes=None), "need spatial_shapes"),
        (dict(spatial_shapes=torch.tensor([[5, 5], [2, 2]])), "more patches"),
        (dict(spatial_shapes=torch.tensor([[0, 3], [2, 2]])), "at least 1x1"),
        (dict(pixel_attention_mask=torch.ones(2, 20, dtype=torch.long)), "first h\\*w"),
        (dict(pixel_values=torch.randn(2, 20, 47)), "flattened"),
    ],
)
def test_bad_naflex_inputs_get_one_line_errors(bad, match):
    model = _naflex_model()
    inputs = {**_batch([(2, 3), (4, 4)], 20), **bad}
    with pytest.raises(ValueError, match=match):
        model(**inputs)


REMOTE_NAFLEX = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):  # the installed package must not be used
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sovit_hf", "tests"):
            raise ImportError("blocked " + name)

sys.meta_path.insert(0, Block())
import torch
from transformers import AutoModel

folder, ref = sys.argv[1], torch.load(sys.argv[2])
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert "transformers_modules" in type(model).__module__, type(model).__module__
with torch.no_grad():
    out = model(**ref["inputs"]).pooler_output
torch.testing.assert_close(out, ref["pooled"], rtol=1e-5, atol=1e-6)  # loaded weights may be differently aligned
print("REMOTE OK")
"""


def test_naflex_runs_as_remote_code_without_sovit_hf(tmp_path):
    """A saved folder's own code (naflex.py travels with modeling_sovit.py) takes NaFlex batches where sovit_hf is
    not importable, with the same numbers."""
    import os
    import subprocess
    import sys

    model = _naflex_model()
    model.save_pretrained(tmp_path / "folder")
    inputs = _batch([(2, 7), (3, 3)], 16)
    with torch.no_grad():
        torch.save({"inputs": inputs, "pooled": model(**inputs).pooler_output}, tmp_path / "ref.pt")
    (tmp_path / "remote.py").write_text(REMOTE_NAFLEX)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(tmp_path / "folder"), str(tmp_path / "ref.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and "REMOTE OK" in result.stdout, result.stderr[-3000:]


# ------------------------------------------------------------------------------------ parity with Siglip2VisionModel


def _siglip2_config(**overrides) -> Siglip2VisionConfig:
    fields = dict(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=2,
        num_attention_heads=16,
        patch_size=8,
        num_patches=16,
    )  # shrunken So400m/16 NaFlex: 16 heads of 72, MLP 4304, a 4x4 position grid
    fields.update(overrides)
    return Siglip2VisionConfig(**fields)


def _images():
    """Mixed aspect ratios: wide, tall, square, tiny (upsampled), large (downsampled)."""
    rng = np.random.default_rng(0)
    sizes = [(40, 120), (100, 30), (64, 64), (9, 13), (300, 200)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


@pytest.fixture(scope="module")
def siglip2_pair(tmp_path_factory):
    torch.manual_seed(0)
    siglip = perturb_(Siglip2VisionModel(_siglip2_config()), scale=0.02).eval()
    folder = tmp_path_factory.mktemp("siglip2")
    siglip.save_pretrained(folder)
    sovit, skipped = load_siglip_as_sovit(folder)
    assert skipped == []
    return siglip, sovit, folder


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_parity_with_siglip2_on_its_processor_output(siglip2_pair, attn):
    siglip, sovit, _ = siglip2_pair
    siglip.set_attn_implementation(attn)
    sovit.set_attn_implementation(attn)
    inputs = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=24)(_images(), return_tensors="pt")
    assert len({tuple(s) for s in inputs["spatial_shapes"].tolist()}) == 5  # five different patch grids
    with torch.no_grad():
        ref = siglip(**inputs, output_hidden_states=True)
        ours = sovit(**inputs, output_hidden_states=True)
    for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states, strict=True)):
        assert (a - b).abs().max() <= MAX_ABS, f"hidden_states[{i}]"
    assert (ours.last_hidden_state - ref.last_hidden_state).abs().max() <= MAX_ABS
    assert (ours.pooler_output - ref.pooler_output).abs().max() <= MAX_ABS
    assert ref.pooler_output.abs().max() > 0.1


@pytest.fixture(scope="module")
def converted_siglip2(siglip2_pair, tmp_path_factory):
    """The SigLIP 2 folder (with Siglip2's own processor config) converted by ``hf_siglip.convert``."""
    _, _, folder = siglip2_pair
    Siglip2ImageProcessorPil(patch_size=8, max_num_patches=24).save_pretrained(folder)
    return convert(folder, tmp_path_factory.mktemp("converted") / "sovit")


def test_converted_siglip2_folder_loads_with_its_processor(siglip2_pair, converted_siglip2):
    from transformers import AutoModel

    siglip, _, _ = siglip2_pair
    out = converted_siglip2
    processor = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=24)
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "SoViTNaFlexImageProcessor" and saved["max_num_patches"] == 24
    model = AutoModel.from_pretrained(out).eval()
    loaded = SoViTNaFlexImageProcessor.from_pretrained(out)
    inputs = loaded(_images(), return_tensors="pt")
    expected_inputs = processor(_images(), return_tensors="pt")
    for key in ("pixel_values", "pixel_attention_mask", "spatial_shapes"):
        torch.testing.assert_close(inputs[key], expected_inputs[key], rtol=0, atol=0)
    with torch.no_grad():
        ours, ref = model(**inputs), siglip(**expected_inputs)
    assert (ours.pooler_output - ref.pooler_output).abs().max() <= MAX_ABS


def test_full_siglip2_folder_converts_its_vision_tower(tmp_path):
    from transformers import Siglip2Config, Siglip2Model

    text = dict(hidden_size=32, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    vision = _siglip2_config(num_hidden_layers=1).to_dict()
    full = perturb_(Siglip2Model(Siglip2Config(vision_config=vision, text_config=text)), 0.02).eval()
    full.save_pretrained(tmp_path / "siglip2")
    sovit, skipped = load_siglip_as_sovit(tmp_path / "siglip2")
    assert skipped and all(k.startswith(("text_model.", "logit_")) for k in skipped)
    inputs = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=24)(_images(), return_tensors="pt")
    with torch.no_grad():
        ref = full.vision_model(**inputs).pooler_output
        assert (sovit(**inputs).pooler_output - ref).abs().max() <= MAX_ABS


@needs_auto_image_processor
def test_auto_image_processor_finds_the_naflex_processor(converted_siglip2):
    from transformers import AutoImageProcessor

    loaded = AutoImageProcessor.from_pretrained(converted_siglip2)
    assert type(loaded) is SoViTNaFlexImageProcessor and loaded.max_num_patches == 24 and loaded.patch_size == 8
    expected = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=24)(_images(), return_tensors="pt")
    torch.testing.assert_close(loaded(_images(), return_tensors="pt")["pixel_values"], expected["pixel_values"])


# ------------------------------------------------------------------------------------------------------- processor


def test_processor_resize_rule_is_the_largest_fitting_scale():
    """SigLIP 2's rule (ops_naflex.resize_to_sequence), checked against a direct search over every scale at which a
    side crosses a patch boundary: the chosen grid fits the budget, and a slightly larger scale would not."""
    processor = SoViTNaFlexImageProcessor(patch_size=16, max_num_patches=64)

    def patches(side: int, scale: float) -> int:  # patches along one side at a scale (rounding off float noise)
        return max(1, int(np.ceil(round(side * scale / 16, 9))))

    for height, width in [(160, 320), (300, 100), (17, 900), (1000, 1000), (5, 7)]:
        batch = processor(Image.new("RGB", (width, height)), return_tensors="pt")
        steps = {k * 16 / side for side in (height, width) for k in range(1, 200)}  # where a side gains a patch
        best = max(s for s in steps if patches(height, s) * patches(width, s) <= 64)
        assert batch["spatial_shapes"][0].tolist() == [patches(height, best), patches(width, best)], (height, width)
        assert int(batch["pixel_attention_mask"][0].sum()) == patches(height, best) * patches(width, best)


def test_processor_matches_siglip2_and_keeps_sovit_input_rules():
    ours = SoViTNaFlexImageProcessor(patch_size=8, max_num_patches=24)
    theirs = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=24)
    a, b = ours(_images(), return_tensors="pt"), theirs(_images(), return_tensors="pt")
    for key in ("pixel_values", "pixel_attention_mask", "spatial_shapes"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    sixteen = Image.fromarray(np.full((20, 30), 65535, dtype=np.uint16))  # 16-bit white: scaled, not clipped
    white = ours(sixteen, return_tensors="pt")
    assert torch.allclose(white["pixel_values"][0, : int(white["pixel_attention_mask"].sum())], torch.tensor(1.0))
    with pytest.raises(ValueError, match="empty"):
        ours(np.zeros((0, 5, 3), dtype=np.uint8))
