"""The text preprocessing of big_vision's two-tower checkpoints, as a transformers tokenizer.

big_vision tokenizes SigLIP's texts with ``tokenize(max_len=L, model=..., eos="sticky", pad_value=1)``
(google-research/big_vision @0127fb6, ``big_vision/pp/ops_text.py``; the settings of SigLIP_demo.ipynb):

1. ``lower=True`` (the op's default): ``tf.strings.lower`` without an encoding, which lowercases ASCII letters only;
2. the SentencePiece model (``c4_en``: 32,000 pieces; ``mc4``: 250,000) with an EOS appended (``add_eos``);
3. sticky EOS: a text longer than ``L`` is cut to its first ``L - 1`` tokens plus the EOS; a shorter one is padded
   with ``pad_value`` 1 (the EOS id), so the last token is always the EOS that the text tower pools.

big_vision's zero-shot evaluator also canonicalises class names and prompt templates
(``evaluators/proj/image_text/prompt_engineering.py`` ``canonicalize_text``: ``_`` to space, punctuation removed,
lowercase, whitespace collapsed), which transformers' ``SiglipTokenizer`` applies to every text; here that is the
``canonicalize`` setting. Every setting (``text_length``, ``lowercase``, ``canonicalize``) is saved in
``tokenizer_config.json``, so ``AutoTokenizer`` / ``AutoProcessor`` reproduce the checkpoint's preprocessing.

The output length is always ``text_length`` (the text tower's ``max_position_embeddings``): the ``padding`` /
``max_length`` / ``truncation`` arguments generic callers pass (the zero-shot pipeline asks for 64) cannot change
what the model was trained on. There is no attention mask: big_vision's text tower attends to the padding.
"""

from __future__ import annotations

import os
import re
import shutil
import string

from transformers import BatchEncoding, PreTrainedTokenizer

ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)  # tf.strings.lower(encoding="")
PUNCTUATION = str.maketrans("", "", string.punctuation)

# Arguments of PreTrainedTokenizerBase.__call__ that cannot change the fixed-length, sticky-EOS output.
_FIXED_BY_THE_CHECKPOINT = ("padding", "truncation", "max_length", "pad_to_multiple_of", "padding_side")


def canonicalize_text(text: str, keep_punctuation_exact_string: str | None = None) -> str:
    """big_vision's ``prompt_engineering.canonicalize_text``: ``_`` -> space, punctuation removed (except the exact
    string ``keep_punctuation_exact_string``, e.g. ``"{}"`` in a template), lowercase, whitespace collapsed."""
    text = text.replace("_", " ")
    if keep_punctuation_exact_string:
        text = keep_punctuation_exact_string.join(
            part.translate(PUNCTUATION) for part in text.split(keep_punctuation_exact_string)
        )
    else:
        text = text.translate(PUNCTUATION)
    return re.sub(r"\s+", " ", text.lower()).strip()


def sticky_eos(ids: list[int], length: int, eos_id: int, pad_id: int) -> list[int]:
    """big_vision ``ops_text.tokenize(eos="sticky")`` on ids that end in the EOS: cut to ``length - 1`` tokens plus
    the EOS, or pad with ``pad_id`` to ``length``."""
    if len(ids) >= length:
        return ids[: length - 1] + [eos_id]
    return ids + [pad_id] * (length - len(ids))


class SoViTSiglipTokenizer(PreTrainedTokenizer):
    """A big_vision SentencePiece model (``.model`` file) with the checkpoint's preprocessing (module docstring).

    Args:
        vocab_file (`str`): the SentencePiece ``.model`` file (big_vision's ``c4_en`` / ``mc4`` files, or any other).
        text_length (`int`): tokens per text (the text tower's ``max_position_embeddings``; SigLIP: 16 or 64).
        lowercase (`bool`): lowercase ASCII letters first (big_vision's default, ``lower=True``).
        canonicalize (`bool`): apply big_vision's ``canonicalize_text`` to every text first.
        eos_token / pad_token / unk_token (`str`): the pieces of the EOS, padding and unknown ids; SigLIP pads with
            the EOS.
    """

    vocab_files_names = {"vocab_file": "spiece.model"}
    model_input_names = ["input_ids"]

    def __init__(
        self,
        vocab_file: str,
        text_length: int = 64,
        lowercase: bool = True,
        canonicalize: bool = False,
        eos_token: str = "</s>",
        pad_token: str = "</s>",
        unk_token: str = "<unk>",
        **kwargs,
    ):
        import sentencepiece

        if isinstance(text_length, bool) or not isinstance(text_length, int) or text_length < 1:
            raise ValueError(f"text_length must be a positive whole number, got {text_length!r}.")
        self.vocab_file = vocab_file
        self.sp_model = sentencepiece.SentencePieceProcessor()
        if not self.sp_model.Load(str(vocab_file)):
            raise ValueError(f"{vocab_file} is not a SentencePiece model.")
        self.text_length = text_length
        self.lowercase = lowercase
        self.canonicalize = canonicalize
        for name, piece in (("eos_token", eos_token), ("pad_token", pad_token), ("unk_token", unk_token)):
            if self.sp_model.PieceToId(str(piece)) == self.sp_model.unk_id() and str(piece) != str(unk_token):
                raise ValueError(f"{name} {piece!r} is not a piece of {vocab_file}.")
        kwargs.setdefault("model_max_length", text_length)
        kwargs.setdefault("split_special_tokens", True)  # "</s>" in a caption is text, as in tensorflow_text
        super().__init__(
            text_length=text_length,
            lowercase=lowercase,
            canonicalize=canonicalize,
            eos_token=eos_token,
            pad_token=pad_token,
            unk_token=unk_token,
            **kwargs,
        )

    @property
    def vocab_size(self) -> int:
        return self.sp_model.GetPieceSize()

    def get_vocab(self) -> dict[str, int]:
        return {self.sp_model.IdToPiece(i): i for i in range(self.vocab_size)}

    def normalize(self, text: str) -> str:
        """The text as the checkpoint's preprocessing hands it to SentencePiece."""
        if self.canonicalize:
            text = canonicalize_text(text)
        if self.lowercase:
            text = text.translate(ASCII_LOWER)
        return text

    def prepare_for_tokenization(self, text: str, is_split_into_words: bool = False, **kwargs):
        return self.normalize(text), kwargs

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.sp_model.EncodeAsPieces(text)

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp_model.PieceToId(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.IdToPiece(int(index))

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.sp_model.DecodePieces([t for t in tokens if t not in self.all_special_tokens])

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None):
        if token_ids_1 is not None:
            raise ValueError("big_vision's text tower takes one text per row, not a pair.")
        return token_ids_0 + [self.eos_token_id]

    def encode_fixed(self, text: str) -> list[int]:
        """One text -> ``text_length`` ids: normalise, SentencePiece + EOS, sticky EOS (module docstring)."""
        if not isinstance(text, str):
            raise ValueError(f"Texts must be strings, got {type(text).__name__}: {text!r}.")
        ids = self.sp_model.EncodeAsIds(self.normalize(text)) + [self.eos_token_id]
        return sticky_eos(ids, self.text_length, self.eos_token_id, self.pad_token_id)

    def __call__(self, text=None, text_pair=None, return_tensors=None, return_attention_mask=None, **kwargs):
        """``{"input_ids": ...}`` of ``text`` (one string or a list), each row ``text_length`` ids. ``padding``,
        ``truncation`` and ``max_length`` are accepted and have no effect (module docstring);
        ``return_attention_mask=True`` gives an all-ones mask (nothing is hidden from the text tower)."""
        if text_pair is not None:
            raise ValueError("big_vision's text tower takes one text per row, not a pair.")
        unknown = sorted(set(kwargs) - set(_FIXED_BY_THE_CHECKPOINT) - {"add_special_tokens", "verbose"})
        if unknown:
            raise ValueError(f"SoViTSiglipTokenizer does not take {unknown[0]}.")
        if text is None:
            raise ValueError("Pass the text(s) to tokenize.")
        single = isinstance(text, str)
        rows = [self.encode_fixed(t) for t in ([text] if single else list(text))]
        if not rows:
            raise ValueError("No texts: pass at least one.")
        data = {"input_ids": rows[0] if single and return_tensors is None else rows}
        if return_attention_mask:
            data["attention_mask"] = [[1] * self.text_length for _ in rows]
            if single and return_tensors is None:
                data["attention_mask"] = data["attention_mask"][0]
        return BatchEncoding(data, tensor_type=return_tensors)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        if not os.path.isdir(save_directory):
            raise ValueError(f"{save_directory} is not a folder.")
        name = (filename_prefix + "-" if filename_prefix else "") + self.vocab_files_names["vocab_file"]
        out = os.path.join(save_directory, name)
        if os.path.abspath(self.vocab_file) != os.path.abspath(out):
            shutil.copyfile(self.vocab_file, out)
        return (out,)


__all__ = ["SoViTSiglipTokenizer", "canonicalize_text", "sticky_eos"]
