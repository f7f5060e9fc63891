"""Text side of captioning / VQA: an offline word-level tokenizer and ``SoViTProcessor`` (image processor + tokenizer).

``SoViTProcessor`` is a small class of its own (not a ``ProcessorMixin``): it saves the image processor
(``preprocessor_config.json``) and the tokenizer (``tokenizer.json`` + ``tokenizer_config.json``) into the model folder
and loads them back with ``SoViTProcessor.from_pretrained(folder)``; the tokenizer alone loads with ``AutoTokenizer``.

Sequence layout (the model's contract):

* captioning: prompt ``[BOS]``, target ``caption [EOS]``;
* VQA: prompt ``[BOS] question [SEP]``, target ``answer [EOS]``.

Training batches are right-padded with ``labels = -100`` on the prompt and padding; generation prompts are
left-padded so that every row continues from its last column.
"""

from __future__ import annotations

import torch
from transformers import BatchFeature, PreTrainedTokenizerFast

from .image_processing_sovit import SoViTImageProcessor

SPECIAL_TOKENS = {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]"}
SEP_TOKEN = "[SEP]"
# Fixed ids 0..4, matching SoViTForConditionalGenerationConfig's defaults.
SPECIAL_ORDER = ("[PAD]", "[BOS]", "[EOS]", "[UNK]", "[SEP]")


def train_tokenizer(texts, min_frequency: int = 1, max_vocab: int = 8192) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained offline with ``tokenizers`` on ``texts``: lowercase, split on whitespace and
    punctuation, unknown words -> ``[UNK]``; special tokens get ids 0-4 (pad, bos, eos, unk, sep)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=max_vocab, min_frequency=min_frequency, special_tokens=list(SPECIAL_ORDER)
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, sep_token=SEP_TOKEN, **SPECIAL_TOKENS)


class SoViTProcessor:
    """Image processor + tokenizer for ``SoViTForConditionalGeneration``.

    ``processor(images, questions=None, targets=None)``: with ``targets`` a right-padded training batch
    (``input_ids``, ``attention_mask``, ``labels``, ``pixel_values``); without, left-padded generation prompts.
    ``questions=None`` means captioning (empty prompt).
    """

    def __init__(self, image_processor: SoViTImageProcessor, tokenizer: PreTrainedTokenizerFast):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id"):
            if getattr(tokenizer, name) is None:
                raise ValueError(f"The tokenizer needs a {name.removesuffix('_id')} (see train_tokenizer).")

    def _words(self, text: str, kind: str, index: int) -> list[int]:
        """Token ids of one text; empty or non-string text is an error (a silent empty prompt or target would train
        the decoder on nothing / ask it nothing). Characters outside the vocabulary become ``[UNK]``."""
        if not isinstance(text, str):
            raise ValueError(f"{kind} {index} must be a string, got {type(text).__name__}: {text!r}.")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"{kind} {index} is empty ({text!r}); every question, caption and answer needs a word.")
        return ids

    def prompt_ids(self, question: str, index: int = 0) -> list[int]:
        """VQA prompt ``[BOS] question [SEP]``; captioning prompts are ``[BOS]`` alone (:meth:`prompts`)."""
        return [self.tokenizer.bos_token_id, *self._words(question, "question", index), self.tokenizer.sep_token_id]

    def prompts(self, questions: list[str] | None, size: int) -> list[list[int]]:
        """Prompt ids per example: ``[BOS]`` for captioning (``questions=None``), else one VQA prompt per question."""
        if questions is None:
            return [[self.tokenizer.bos_token_id] for _ in range(size)]
        return [self.prompt_ids(q, i) for i, q in enumerate(questions)]

    def target_ids(self, target: str, index: int = 0) -> list[int]:
        return [*self._words(target, "target", index), self.tokenizer.eos_token_id]

    def sequence_lengths(self, questions: list[str] | None, targets: list[str]) -> list[int]:
        """Tokens per training example (prompt + target + EOS): what the decoder's ``max_position_embeddings``
        must hold. Raises the same errors as ``__call__`` for empty or non-string text."""
        prompts = self.prompts(questions, len(targets))
        return [len(p) + len(self.target_ids(t, i)) for i, (p, t) in enumerate(zip(prompts, targets, strict=True))]

    def __call__(self, images=None, questions=None, targets=None, return_tensors: str = "pt") -> BatchFeature:
        if return_tensors != "pt":
            raise ValueError("SoViTProcessor returns PyTorch tensors only (return_tensors='pt').")
        if images is None and questions is None and targets is None:
            raise ValueError("Pass images and/or questions/targets.")
        for name, values in (("images", images), ("questions", questions), ("targets", targets)):
            # A lone string would be taken as a list of one-character texts; a lone image has no length.
            if values is not None and (isinstance(values, str | bytes) or not hasattr(values, "__len__")):
                raise ValueError(f"{name} must be a list, one entry per example; got {type(values).__name__}.")
        size = len(images) if images is not None else len(questions if questions is not None else targets)
        if size == 0:
            raise ValueError(f"No {'images' if images is not None else 'texts'}: pass at least one example.")
        for name, values in (("questions", questions), ("targets", targets)):
            if values is not None and len(values) != size:
                raise ValueError(f"{len(values)} {name} for {size} images.")
        prompts = self.prompts(questions, size)
        pad = self.tokenizer.pad_token_id
        data = {}
        if targets is not None:
            rows = [p + self.target_ids(t, i) for i, (p, t) in enumerate(zip(prompts, targets, strict=True))]
            width = max(map(len, rows))
            ids = torch.full((size, width), pad, dtype=torch.long)
            labels = torch.full((size, width), -100, dtype=torch.long)
            mask = torch.zeros((size, width), dtype=torch.long)
            for i, (p, row) in enumerate(zip(prompts, rows, strict=True)):
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
                labels[i, len(p) : len(row)] = torch.tensor(row[len(p) :])
            data.update(input_ids=ids, attention_mask=mask, labels=labels)
        else:
            width = max(map(len, prompts))
            ids = torch.full((size, width), pad, dtype=torch.long)
            mask = torch.zeros((size, width), dtype=torch.long)
            for i, p in enumerate(prompts):
                ids[i, width - len(p) :] = torch.tensor(p)
                mask[i, width - len(p) :] = 1
            data.update(input_ids=ids, attention_mask=mask)
        if images is not None:  # the image processor checks each image, scales 16-bit ones and converts to RGB
            data["pixel_values"] = self.image_processor(list(images), return_tensors="pt")["pixel_values"]
        return BatchFeature(data)

    def batch_decode(self, sequences) -> list[str]:
        """Generated ids -> text, cut at the first EOS, special tokens dropped. Negative ids are refused (the
        tokenizer would raise an OverflowError naming none); ``-100`` usually means labels were passed."""
        eos = self.tokenizer.eos_token_id
        texts = []
        for r, row in enumerate(sequences):
            row = [int(t) for t in row]
            if row and min(row) < 0:
                raise ValueError(
                    f"Row {r} holds token id {min(row)}: ids must be >= 0 (-100 marks ignored label positions)."
                )
            if eos in row:
                row = row[: row.index(eos)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts

    def save_pretrained(self, folder) -> None:
        self.image_processor.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder, **kwargs) -> SoViTProcessor:
        """Load from a folder written by ``save_pretrained`` (``AutoProcessor.from_pretrained`` lands here after
        ``import sovit_hf``; its extra keyword arguments, e.g. ``trust_remote_code``, are not needed)."""
        return cls(SoViTImageProcessor.from_pretrained(folder), PreTrainedTokenizerFast.from_pretrained(folder))


__all__ = ["SoViTProcessor", "train_tokenizer"]
