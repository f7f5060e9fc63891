"""Zero-shot classification and image-text retrieval with a two-tower model, as big_vision evaluates them
(google-research/big_vision @0127fb6, ``evaluators/proj/image_text/{discriminative_classifier,prompt_engineering,
image_text_retrieval}.py``).

* Zero-shot classifier: every class name is put into every prompt template (both canonicalised by default, as
  big_vision's ``get_class_names`` / ``get_prompt_templates`` do), each prompt embedded and normalised by the text
  tower; a class's embedding is the mean over its prompts, normalised again (``z / (||z|| + 1e-8)``). An image is
  assigned the class of highest ``zimg . zclass``.
* Retrieval: Recall@k (k = 1, 5, 10) in both directions from the image-text similarity matrix; a text may belong to
  one image, an image may have several texts (COCO's five captions). Image -> text counts a hit when any of the
  image's texts is among its k most similar texts; text -> image when the text's image is among its k most similar
  images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .modeling_sovit_siglip import l2_normalize
from .tokenization_sovit_siglip import canonicalize_text

RECALL_AT = (1, 5, 10)
CLASS_NAME_ONLY = ("{}",)  # big_vision's "class_name_only" templates


def prompts_for(class_names: Sequence[str], templates: Sequence[str] = CLASS_NAME_ONLY, canonicalize: bool = True):
    """``[[template.format(name) for template in templates] for name in class_names]``, with big_vision's
    canonicalisation of names (keeping ``,``) and templates (keeping ``{}``) when ``canonicalize``."""
    if not class_names or not templates:
        raise ValueError("Pass at least one class name and one prompt template.")
    if any("{}" not in template for template in templates):
        raise ValueError("Every prompt template needs a '{}' for the class name.")
    if canonicalize:
        class_names = [canonicalize_text(name, keep_punctuation_exact_string=",") for name in class_names]
        templates = [canonicalize_text(t, keep_punctuation_exact_string="{}") for t in templates]
    return [[template.format(name) for template in templates] for name in class_names]


@torch.no_grad()
def class_embeddings(
    model,
    tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str] = CLASS_NAME_ONLY,
    canonicalize: bool = True,
    batch_size: int = 256,
) -> torch.Tensor:
    """Normalised class embeddings `(C, D)`: per class, the mean of its prompts' normalised text embeddings,
    normalised (big_vision ``discriminative_classifier._average_embeddings(normalize=True)``)."""
    prompts = prompts_for(class_names, templates, canonicalize)
    flat = [p for per_class in prompts for p in per_class]
    device = next(model.parameters()).device
    embeds = []
    for start in range(0, len(flat), batch_size):
        ids = tokenizer(flat[start : start + batch_size], return_tensors="pt")["input_ids"].to(device)
        embeds.append(l2_normalize(model.get_text_features(ids).pooler_output.float()))
    per_prompt = torch.cat(embeds).view(len(prompts), len(prompts[0]), -1)  # (C, T, D)
    return l2_normalize(per_prompt.mean(dim=1))


@torch.no_grad()
def image_embeddings(model, pixel_values: torch.Tensor, batch_size: int = 256, **naflex) -> torch.Tensor:
    """Normalised image embeddings `(N, D)`; ``naflex``: ``spatial_shapes`` and ``pixel_attention_mask`` of NaFlex
    ``pixel_values``, sliced with them."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(pixel_values), batch_size):
        extra = {k: v[i : i + batch_size].to(device) for k, v in naflex.items()}
        features = model.get_image_features(pixel_values[i : i + batch_size].to(device), **extra)
        out.append(l2_normalize(features.pooler_output.float()))
    return torch.cat(out)


def zero_shot_predict(image_embeds: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
    """Class index per image `(N,)`: the class of highest ``zimg . zclass`` (the monotone sigmoid or softmax of the
    logits picks the same class)."""
    return (image_embeds @ class_embeds.T).argmax(dim=1)


def zero_shot_accuracy(image_embeds: torch.Tensor, class_embeds: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images whose predicted class is ``labels``."""
    return float((zero_shot_predict(image_embeds, class_embeds) == labels.to(image_embeds.device)).float().mean())


def retrieval_recall(
    similarity: torch.Tensor, text_to_image: Sequence[int] | torch.Tensor, ks: Sequence[int] = RECALL_AT
) -> dict[str, float]:
    """Recall@k both ways (module docstring) from ``similarity`` `(N_images, N_texts)` (higher is closer) and
    ``text_to_image[j]``, the image of text ``j``. Returns ``{"image_to_text_recall@k", "text_to_image_recall@k"}``.
    A k above the number of candidates counts every candidate (recall 1)."""
    similarity = torch.as_tensor(similarity, dtype=torch.float32)
    owner = torch.as_tensor(text_to_image, dtype=torch.long)
    n_images, n_texts = similarity.shape
    if owner.shape != (n_texts,) or bool((owner < 0).any()) or bool((owner >= n_images).any()):
        raise ValueError(f"text_to_image must give each of the {n_texts} texts an image index in [0, {n_images}).")
    text_rank = similarity.argsort(dim=1, descending=True, stable=True)  # (N_img, N_txt): texts by closeness
    image_rank = similarity.argsort(dim=0, descending=True, stable=True)  # (N_img, N_txt): images per text column
    out = {}
    for k in ks:
        top_texts = text_rank[:, : min(k, n_texts)]  # (N_img, k)
        hits = (owner[top_texts] == torch.arange(n_images)[:, None]).any(dim=1)
        out[f"image_to_text_recall@{k}"] = float(hits.float().mean())
        top_images = image_rank[: min(k, n_images)]  # (k, N_txt)
        out[f"text_to_image_recall@{k}"] = float((top_images == owner[None]).any(dim=0).float().mean())
    return out


__all__ = [
    "CLASS_NAME_ONLY",
    "RECALL_AT",
    "class_embeddings",
    "image_embeddings",
    "prompts_for",
    "retrieval_recall",
    "zero_shot_accuracy",
    "zero_shot_predict",
]
