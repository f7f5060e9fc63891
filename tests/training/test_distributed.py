"""Multi-process training on CPU (gloo): DDP started by ``accelerate launch`` and FSDP2 under ``torchrun`` each
match one process at the same global batch; an FSDP run resumed from its sharded checkpoint is bit-equal to a
straight run; ``shard_model`` keeps the model's math; the accelerate configs are valid for these models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from tests.conftest import needs
from tests.training.test_classification import TINY

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
RECIPE = ["-m", "sovit_hf.training.classification"]
# torchrun's rendezvous binds a free port itself (a port picked here could be taken before torchrun binds it).
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ACCELERATE = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--config_file",
    str(CONFIGS / "accelerate_ddp_cpu.yaml"),
]


def _train(launcher: list[str], out: Path, per_device_batch: int, *extra: str) -> dict[int, float]:
    args = [*TINY, "--per_device_train_batch_size", str(per_device_batch), "--max_steps", "4", "--logging_steps", "1"]
    args += ["--eval_strategy", "no", "--augment", "False", "--use_cpu", "True", "--optimizer", "sgd_finetune"]
    args += ["--warmup_steps", "0", "--learning_rate", "0.1"]  # steps large enough that a missed sync would show
    cmd = [*launcher, *RECIPE, "--output_dir", str(out), *args, *extra]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {r["step"]: r["loss"] for r in history if "loss" in r}


def _assert_same_run(one: dict, two: dict, a: Path, b: Path, exact: bool = False) -> None:
    assert sorted(one) == sorted(two) == list(range(1, 5))
    for step in one:  # float32 sums in a different order across the two gradient shards
        tol = 0.0 if exact else 1e-5 * max(1.0, abs(one[step]))
        assert abs(one[step] - two[step]) <= tol, (step, one[step], two[step])
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sorted(wa) == sorted(wb)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], **(dict(rtol=0, atol=0) if exact else {}), msg=key)
    for folder in (a, b):  # the epochs that ran: 4 steps of a global batch of 16 (not --num_train_epochs)
        record = json.loads((folder / "run_record.json").read_text())
        assert record["epochs"] == pytest.approx(4 / -(-record["train_examples"] // 16)), folder


@needs("datasets", "sklearn")
def test_accelerate_launch_runs_two_ddp_processes_that_match_one(tmp_path):
    one = _train([sys.executable], tmp_path / "one", 16)
    two = _train(ACCELERATE, tmp_path / "two", 8)  # same global batch of 16
    _assert_same_run(one, two, tmp_path / "one", tmp_path / "two")
    assert json.loads((tmp_path / "two" / "run_record.json").read_text())["processes"] == 2


@needs("datasets", "sklearn")
def test_fsdp_two_processes_match_one_and_resume_exactly(tmp_path):
    fsdp = ["--fsdp", "full_shard"]
    one = _train([sys.executable], tmp_path / "one", 16, *fsdp)
    checkpoints = ["--save_strategy", "steps", "--save_steps", "2"]
    two = _train(TORCHRUN, tmp_path / "two", 8, *fsdp, *checkpoints)
    _assert_same_run(one, two, tmp_path / "one", tmp_path / "two")
    record = json.loads((tmp_path / "two" / "run_record.json").read_text())
    assert record["processes"] == 2
    # Sharded, not replicated: each rank wrote its own part of the checkpoint.
    parts = sorted((tmp_path / "two" / "checkpoint-2").glob("*.distcp"))
    sizes = [p.stat().st_size for p in parts]
    assert len(parts) == 2 and max(sizes) < 0.75 * sum(sizes), sizes
    resume = ["--resume_from_checkpoint", str(tmp_path / "two" / "checkpoint-2")]
    resumed = _train(TORCHRUN, tmp_path / "resumed", 8, *fsdp, *resume)
    _assert_same_run(two, resumed, tmp_path / "two", tmp_path / "resumed", exact=True)


def test_fsdp_two_processes_shard_the_captioning_decoder(tmp_path):
    """Two ranks (torchrun, gloo): every decoder layer is one FSDP unit whose parameters are split between the ranks
    (the cross-attention included, as the layer computes it in its own forward), and the sharded model's loss and
    gradients equal the unsharded model's on the same weights and batch."""
    report_path = tmp_path / "report.json"
    cmd = [*TORCHRUN, "-m", "tests.training.fsdp_generation_worker", str(report_path)]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["world_size"] == 2 and report["decoder_layers"] == 2
    assert report["decoder_layers_are_units"] and report["decoder_params_are_dtensors"]
    # rank 0 holds ceil(rows / 2) of every parameter (dim 0 is the one FSDP2 splits)
    assert report["local_rows"] == [(rows + 1) // 2 for rows in report["global_rows"]]
    assert abs(report["loss"] - report["plain_loss"]) <= 1e-6 * abs(report["plain_loss"])
    assert report["max_grad_error"] < 1e-5


@pytest.fixture
def one_rank_group():
    """A one-process gloo group for in-process FSDP (destroyed afterwards: later tests see no process group)."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _generation_model():
    from sovit_hf import SoViTForConditionalGeneration, SoViTForConditionalGenerationConfig
    from tests.conftest import perturb_, tiny_config

    config = SoViTForConditionalGenerationConfig(
        vision_config=tiny_config(pool_type="none").to_dict(),
        vocab_size=50,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        max_position_embeddings=16,
        hidden_dropout=0.0,
    )
    return perturb_(SoViTForConditionalGeneration(config))


def _generation_batch() -> dict[str, torch.Tensor]:
    """Two seeded images and captions for :func:`_generation_model` (the captions are the labels)."""
    generator = torch.Generator().manual_seed(0)
    batch = {
        "pixel_values": torch.randn(2, 3, 36, 36, generator=generator),
        "input_ids": torch.randint(0, 50, (2, 6), generator=generator),
    }
    batch["labels"] = batch["input_ids"].clone()
    return batch


@pytest.mark.parametrize("checkpointing", [False, True])
def test_shard_model_wraps_every_block_and_keeps_the_math(one_rank_group, checkpointing):
    """Loss and gradients of the sharded captioning model equal the plain model's (encoder and decoder blocks)."""
    import copy

    from torch.distributed.fsdp import FSDPModule

    from sovit_hf.training.fsdp import WRAP_CLASSES, shard_model

    plain = _generation_model().train()
    sharded = shard_model(copy.deepcopy(plain), activation_checkpointing=checkpointing)
    encoder = [m for m in sharded.modules() if type(m).__name__.endswith("SoViTEncoderLayer")]
    decoder = [m for m in sharded.modules() if type(m).__name__.endswith("SoViTDecoderLayer")]
    assert len(encoder) == len(decoder) == 2 and all(isinstance(m, FSDPModule) for m in encoder + decoder)
    assert set(WRAP_CLASSES) == {"SoViTEncoderLayer", "SoViTDecoderLayer", "SoViTMAPHead"}
    assert isinstance(sharded, FSDPModule)
    batch = _generation_batch()
    expected, got = plain(**batch).loss, sharded(**batch).loss
    expected.backward()
    got.backward()
    torch.testing.assert_close(got, expected)
    grads = {n: p.grad.full_tensor() for n, p in sharded.named_parameters()}
    for name, param in plain.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, msg=name)


def test_bf16_policy_computes_in_bf16_and_keeps_float32_weights(one_rank_group):
    import copy

    from sovit_hf import SoViTForImageClassification
    from sovit_hf.training.fsdp import shard_model
    from tests.conftest import perturb_, tiny_config

    plain = perturb_(SoViTForImageClassification(tiny_config())).train()
    reference = copy.deepcopy(plain).to(torch.bfloat16)  # the same weights, computing in bf16
    sharded = shard_model(plain, param_dtype=torch.bfloat16)
    pixels = torch.randn(2, 3, 36, 36)
    logits = sharded(pixels).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits, reference(pixels.bfloat16()).logits, rtol=0, atol=0)
    assert all(p.dtype == torch.float32 for p in sharded.parameters())  # master weights


@needs("accelerate")
@pytest.mark.parametrize(
    "name, model",
    [("accelerate_fsdp.yaml", "classification"), ("accelerate_fsdp_seq2seq.yaml", "generation")],
)
def test_fsdp_configs_are_valid_and_name_classes_of_the_model(name, model):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    from sovit_hf import SoViTForImageClassification
    from sovit_hf.training.fsdp import WRAP_CLASSES
    from tests.conftest import tiny_config

    config = load_config_from_file(str(CONFIGS / name))
    assert config.distributed_type == DistributedType.FSDP and config.fsdp_config["fsdp_version"] == 2
    names = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")
    net = SoViTForImageClassification(tiny_config()) if model == "classification" else _generation_model()
    present = {type(m).__name__ for m in net.modules()}
    assert set(names) <= present & set(WRAP_CLASSES), (names, present)  # accelerate fails on a class not present
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        transformer_cls_names_to_wrap=names,
        state_dict_type=config.fsdp_config["fsdp_state_dict_type"],
        reshard_after_forward=config.fsdp_config["fsdp_reshard_after_forward"],
    )
    assert plugin.fsdp_version == 2


def test_ddp_configs_start_several_processes():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    for name in ("accelerate_ddp_cpu.yaml", "accelerate_ddp_gpu.yaml"):
        config = load_config_from_file(str(CONFIGS / name))
        # accelerate launch uses its multi-process launcher for MULTI_GPU; MULTI_CPU would start one process.
        assert config.distributed_type == DistributedType.MULTI_GPU and config.num_processes >= 2, name
