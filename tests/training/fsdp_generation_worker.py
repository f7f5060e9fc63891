"""One rank of ``test_fsdp_two_processes_shard_the_captioning_decoder`` (run under ``torchrun --nproc_per_node 2``,
gloo on CPU): the captioning model under :func:`~sovit_hf.training.fsdp.shard_model` next to an unsharded copy of the
same weights, on the same batch. Rank 0 writes what it measured to the JSON file named on the command line."""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from sovit_hf.training.fsdp import shard_model
from tests.training.test_distributed import _generation_batch, _generation_model


def main(out: str) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)  # the same weights on every rank
    plain = _generation_model().train()
    sharded = shard_model(copy.deepcopy(plain))
    decoder = [m for m in sharded.modules() if type(m).__name__.endswith("SoViTDecoderLayer")]
    # every decoder parameter is a DTensor of which this rank holds a part: (its rows, all rows) per parameter
    rows = [(p.to_local().shape[0], p.shape[0]) for layer in decoder for p in layer.parameters()]
    batch = _generation_batch()
    expected, got = plain(**batch).loss, sharded(**batch).loss
    expected.backward()
    got.backward()  # each rank's gradients are reduced over both ranks (same batch: the mean is the plain gradient)
    grads = {n: p.grad.full_tensor() for n, p in sharded.named_parameters()}
    grad_error = max((grads[n] - p.grad).abs().max().item() for n, p in plain.named_parameters())
    if dist.get_rank() == 0:
        report = {
            "world_size": dist.get_world_size(),
            "decoder_layers": len(decoder),
            "decoder_layers_are_units": all(isinstance(m, FSDPModule) for m in decoder),
            "decoder_params_are_dtensors": all(isinstance(p, DTensor) for m in decoder for p in m.parameters()),
            "local_rows": [local for local, _ in rows],
            "global_rows": [full for _, full in rows],
            "loss": got.item(),
            "plain_loss": expected.item(),
            "max_grad_error": grad_error,
        }
        with open(out, "w") as handle:
            json.dump(report, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
