"""ONNX export with a dynamic batch axis, run in onnxruntime, on SoViT as on transformers' SiglipVisionModel: the
legacy TorchScript exporter (``dynamo=False``) and the dynamo exporter, each compared with eager at a batch size other
than the one exported."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import needs
from tests.ecosystem.models import pixels, siglip, sovit

pytestmark = needs("onnx", "onnxruntime", "onnxscript")


class Pooled(torch.nn.Module):
    """The pooled output (SoViT classifier: logits) as a plain tensor, for the exporters."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values)
        return out.logits if hasattr(out, "logits") else out.pooler_output


def _export_and_run(model: torch.nn.Module, path, dynamo: bool) -> None:
    import onnxruntime

    wrapped = Pooled(model).eval()
    x, other = pixels(2), pixels(3, seed=1)
    kwargs = (
        dict(dynamic_shapes=({0: torch.export.Dim("batch")},))
        if dynamo
        else dict(dynamic_axes={"pixel_values": {0: "batch"}, "out": {0: "batch"}})
    )
    torch.onnx.export(
        wrapped, (x,), str(path), input_names=["pixel_values"], output_names=["out"], dynamo=dynamo, **kwargs
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"pixel_values": other.numpy()})
    with torch.no_grad():
        want = wrapped(other).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_siglip_control_exports(tmp_path, dynamo):
    _export_and_run(siglip(attn_implementation="eager"), tmp_path / "siglip.onnx", dynamo)


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("pool_type", ["map", "gap", "tok"])
def test_sovit_exports_with_a_dynamic_batch(tmp_path, pool_type, dynamo):
    model = sovit(pool_type, classifier=True, attn_implementation="eager")
    _export_and_run(model, tmp_path / "sovit.onnx", dynamo)
