"""Text side of captioning / VQA: an offline word-level tokenizer and ``SoViTProcessor`` (image processor + tokenizer).

``SoViTProcessor`` is a ``transformers.ProcessorMixin``: ``save_pretrained`` writes the tokenizer (``tokenizer.json`` +
``tokenizer_config.json``), the chat template (``chat_template.jinja``) and ``processor_config.json`` (which holds the
image processor's settings in transformers >= 5.18); ``AutoProcessor.from_pretrained(folder)`` loads it back
(in-process after ``import sovit_hf``, or as remote code with ``trust_remote_code=True``). It is what the
``image-text-to-text`` pipeline calls.

Sequence layout (the model's contract), one for both tasks:

    [BOS] prompt [SEP] target [EOS]

The prompt is the question for VQA and empty for captioning (``[BOS] [SEP] caption [EOS]``). The tokenizer adds the
special tokens itself (its post-processor): ``tokenizer(prompt)`` is the generation prompt ``[BOS] prompt [SEP]``,
``tokenizer(prompt, target)`` the training row, with ``token_type_ids`` 1 on ``target [EOS]``. Special-token text
inside a caption or question ("[EOS]") is split like any other text (``split_special_tokens=True``), never read as
the special token. Training batches are right-padded with ``labels = -100`` on the prompt and padding; generation
prompts are left-padded so that every row continues from its last column.
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerFast, ProcessorMixin

from .image_processing_sovit import SoViTImageProcessor

SPECIAL_TOKENS = {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]"}
SEP_TOKEN = "[SEP]"
# Fixed ids 0..4, matching SoViTForConditionalGenerationConfig's defaults.
SPECIAL_ORDER = ("[PAD]", "[BOS]", "[EOS]", "[UNK]", "[SEP]")

# The text of the user's turn(s) is the prompt; images are passed to the image processor, one per conversation.
# A conversation with an image and no text is a captioning request (empty prompt).
CHAT_TEMPLATE = (
    "{%- for message in messages if message['role'] == 'user' -%}"
    "{%- if not loop.first %} {% endif -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# What ``from_pretrained`` passes on to the image processor: where to find the files, nothing that sets attributes.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")

# Keyword arguments the pipeline and ``apply_chat_template`` pass that change nothing here: rows are always padded
# (right for training, left for prompts) and never truncated (the recipes check lengths before training).
# ``videos``/``audio`` arrive as ``None`` from ``apply_chat_template``.
_ACCEPTED_NO_OPS = {
    "padding": (True, "longest"),
    "truncation": (False, None),
    "add_special_tokens": (True,),
    "videos": (None,),
    "audio": (None,),
}


def train_tokenizer(
    texts, min_frequency: int = 1, max_vocab: int = 8192, model_max_length: int = 64
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained offline with ``tokenizers`` on ``texts``: lowercase, split on whitespace and
    punctuation, unknown words -> ``[UNK]``; special tokens get ids 0-4 (pad, bos, eos, unk, sep) and are added by
    the tokenizer's post-processor (the layout in this module's docstring). ``model_max_length`` should be the
    decoder's ``max_position_embeddings``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=max_vocab, min_frequency=min_frequency, special_tokens=list(SPECIAL_ORDER)
    )
    tok.train_from_iterator(texts, trainer=trainer)
    ids = {token: i for i, token in enumerate(SPECIAL_ORDER)}
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [SEP]",
        pair="[BOS] $A [SEP] $B:1 [EOS]:1",
        special_tokens=[(t, ids[t]) for t in ("[BOS]", "[SEP]", "[EOS]")],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        sep_token=SEP_TOKEN,
        split_special_tokens=True,
        model_max_length=model_max_length,
        **SPECIAL_TOKENS,
    )


def _as_texts(values, name: str) -> list | None:
    """``None``, one string (one example) or a list of them; a tensor or other object is refused."""
    if values is None:
        return None
    if isinstance(values, str):
        return [values]
    if isinstance(values, bytes) or not isinstance(values, list | tuple):
        raise ValueError(f"{name} must be a string or a list of strings, one per example; got {type(values).__name__}.")
    return list(values)


def _as_images(images) -> list | None:
    """One image, a sequence of images (list, datasets column, 4-D array), or (from ``apply_chat_template``) one
    list of images per conversation, which must hold exactly one image each."""
    if images is None:
        return None
    if isinstance(images, Image.Image | str) or (hasattr(images, "ndim") and images.ndim <= 3):
        return [images]
    flat = []
    for i, image in enumerate(images):
        if isinstance(image, list | tuple):
            if len(image) != 1:
                raise ValueError(f"Example {i} holds {len(image)} images; SoViT takes exactly one per example.")
            image = image[0]
        flat.append(image)
    return flat


class SoViTProcessor(ProcessorMixin):
    """Image processor + tokenizer for ``SoViTForConditionalGeneration``.

    ``processor(images=..., text=..., suffix=...)``: ``text`` holds the prompts (VQA questions; ``None`` or ``""``
    for captioning), ``suffix`` the training targets (captions / answers). With ``suffix`` the result is a
    right-padded training batch (``input_ids``, ``attention_mask``, ``labels``, ``pixel_values``); without, left-padded
    generation prompts. One string stands for one example. ``suffix`` follows PaliGemma's processor.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        chat_template = CHAT_TEMPLATE if chat_template is None else chat_template
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id"):
            if getattr(tokenizer, name) is None:
                raise ValueError(f"The tokenizer needs a {name.removesuffix('_id')} (see train_tokenizer).")

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """The image processor is always ``SoViTImageProcessor``: loaded as such rather than through
        ``AutoImageProcessor``, which would ask whether to run the folder's copy of it as remote code (and which
        transformers < 5.18 only offers with torchvision installed). The tokenizer loads as transformers does it."""
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        hub = {k: v for k, v in kwargs.items() if k in _HUB_KWARGS}
        return [SoViTImageProcessor.from_pretrained(pretrained_model_name_or_path, **hub), tokenizer]

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    def _encode(self, prompt: str, target: str | None, index: int) -> tuple[list[int], int]:
        """Token ids of one row and its prompt length (``[BOS] prompt [SEP]``). A non-string prompt is an error; an
        empty one is the captioning prompt. An empty target is an error (it would train the decoder on nothing).
        Characters outside the vocabulary become ``[UNK]``."""
        if not isinstance(prompt, str):
            raise ValueError(f"text {index} must be a string, got {type(prompt).__name__}: {prompt!r}.")
        prompt_ids = self.tokenizer(prompt)["input_ids"]
        if target is None:
            return prompt_ids, len(prompt_ids)
        if not isinstance(target, str):
            raise ValueError(f"suffix {index} must be a string, got {type(target).__name__}: {target!r}.")
        if not target.strip():
            raise ValueError(f"suffix {index} is empty ({target!r}); every caption and answer needs a word.")
        row = self.tokenizer(prompt, target, return_token_type_ids=True)
        if sum(row["token_type_ids"]) < 2:  # target tokens + EOS
            raise ValueError(f"suffix {index} ({target!r}) gives no token: every caption and answer needs a word.")
        return row["input_ids"], len(prompt_ids)

    def sequence_lengths(self, text: list[str] | None, suffix: list[str]) -> list[int]:
        """Tokens per training example (prompt + target + EOS): what the decoder's ``max_position_embeddings``
        must hold. Raises the same errors as ``__call__`` for empty or non-string text."""
        prompts = [""] * len(suffix) if text is None else text
        return [len(self._encode(p, t, i)[0]) for i, (p, t) in enumerate(zip(prompts, suffix, strict=True))]

    def __call__(self, images=None, text=None, suffix=None, return_tensors: str = "pt", **kwargs) -> BatchFeature:
        if return_tensors != "pt":
            raise ValueError("SoViTProcessor returns PyTorch tensors only (return_tensors='pt').")
        for key, value in kwargs.items():
            if key not in _ACCEPTED_NO_OPS or value not in _ACCEPTED_NO_OPS[key]:
                raise ValueError(f"SoViTProcessor does not take {key}={value!r}.")
        images, text, suffix = _as_images(images), _as_texts(text, "text"), _as_texts(suffix, "suffix")
        if images is None and text is None and suffix is None:
            raise ValueError("Pass images and/or text/suffix.")
        size = len(next(v for v in (images, text, suffix) if v is not None))
        if size == 0:
            raise ValueError(f"No {'images' if images is not None else 'texts'}: pass at least one example.")
        for name, values in (("text", text), ("suffix", suffix)):
            if values is not None and len(values) != size:
                raise ValueError(f"{len(values)} {name} entries for {size} examples.")
        prompts = [""] * size if text is None else text
        targets = [None] * size if suffix is None else suffix
        rows = [self._encode(p, t, i) for i, (p, t) in enumerate(zip(prompts, targets, strict=True))]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((size, width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        data = {}
        if suffix is not None:  # right padding; labels on target + EOS only
            labels = torch.full((size, width), -100, dtype=torch.long)
            for i, (row, prompt_len) in enumerate(rows):
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
                labels[i, prompt_len : len(row)] = torch.tensor(row[prompt_len:])
            data.update(input_ids=ids, attention_mask=mask, labels=labels)
        else:  # left padding: every prompt ends in the last column
            for i, (row, _) in enumerate(rows):
                ids[i, width - len(row) :] = torch.tensor(row)
                mask[i, width - len(row) :] = 1
            data.update(input_ids=ids, attention_mask=mask)
        if images is not None:  # the image processor checks each image, scales 16-bit ones and converts to RGB
            data["pixel_values"] = self.image_processor(images, return_tensors="pt")["pixel_values"]
        return BatchFeature(data)

    def batch_decode(self, sequences, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        """Generated ids -> text, cut at the first EOS, special tokens dropped, stripped. Negative ids are refused
        (the tokenizer would raise an OverflowError naming none); ``-100`` usually means labels were passed."""
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
            texts.append(self.tokenizer.decode(row, skip_special_tokens=skip_special_tokens, **kwargs).strip())
        return texts

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        """What the ``image-text-to-text`` pipeline decodes (prompts and generated sequences): ``batch_decode``."""
        if torch.is_tensor(generated_outputs) and generated_outputs.dim() == 1:
            generated_outputs = generated_outputs[None]
        return self.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)


__all__ = ["SoViTProcessor", "train_tokenizer"]
