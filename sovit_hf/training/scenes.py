"""Embedded captioning / VQA data that needs no download: procedurally drawn scenes of 1-3 shapes.

Each scene is a ``size`` x ``size`` PIL image on a black background with 1-3 shapes (circle, square, triangle) of
distinct colours (red, green, blue, yellow, white), small or large, in distinct cells of a 2x2 grid. Every image
has three reference captions and several question/answer pairs (count, colour of a shape, shape of a colour,
yes/no presence, position of a single shape). Everything is a function of the seed.

``scenes_captioning(n, seed)``: columns ``image``, ``captions`` (list of 3 strings).
``scenes_vqa(n, seed)``: one row per question: ``image``, ``question``, ``answers`` (10 identical human answers,
the VQA format), ``image_id``.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40),
           "white": (245, 245, 245)}  # fmt: skip
SIZES = ("small", "large")
COUNT_WORDS = ("zero", "one", "two", "three")
CELLS = ((0, 0), (1, 0), (0, 1), (1, 1))  # (column, row) of the 2x2 grid
NUM_ANSWERS = 10


def make_scene(rng: random.Random, size: int = 32) -> dict:
    """One scene: its image and the list of objects ``{shape, colour, size, cell}``."""
    count = rng.randint(1, 3)
    colours = rng.sample(list(COLOURS), count)
    cells = rng.sample(CELLS, count)
    objects = [
        {"shape": rng.choice(SHAPES), "colour": c, "size": rng.choice(SIZES), "cell": cell}
        for c, cell in zip(colours, cells, strict=True)
    ]
    image = Image.new("RGB", (size, size), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    half = size // 2
    for obj in objects:
        col, row = obj["cell"]
        cx, cy = col * half + half // 2, row * half + half // 2
        r = half * (0.45 if obj["size"] == "large" else 0.25)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = COLOURS[obj["colour"]]
        if obj["shape"] == "circle":
            draw.ellipse(box, fill=fill)
        elif obj["shape"] == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return {"image": image, "objects": objects}


def _phrase(obj: dict, with_size: bool = True) -> str:
    return f"a {obj['size']} {obj['colour']} {obj['shape']}" if with_size else f"a {obj['colour']} {obj['shape']}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _position(cell: tuple[int, int]) -> str:
    return f"{('top', 'bottom')[cell[1]]} {('left', 'right')[cell[0]]}"


def captions_for(objects: list[dict]) -> list[str]:
    n = len(objects)
    noun = "shape" if n == 1 else "shapes"
    return [
        _join([_phrase(o) for o in objects]),
        f"{COUNT_WORDS[n]} {noun} : " + _join([_phrase(o, with_size=False) for o in objects]),
        _join([f"{_phrase(o)} at the {_position(o['cell'])}" for o in objects]),
    ]


def questions_for(objects: list[dict], rng: random.Random) -> list[tuple[str, str]]:
    n = len(objects)
    qa = [("how many shapes are there?", COUNT_WORDS[n])]
    shape_counts = {s: sum(o["shape"] == s for o in objects) for s in SHAPES}
    for obj in objects:
        qa.append((f"what shape is {obj['colour']}?", obj["shape"]))
        if shape_counts[obj["shape"]] == 1:
            qa.append((f"what color is the {obj['shape']}?", obj["colour"]))
        qa.append((f"where is the {obj['colour']} {obj['shape']}?", _position(obj["cell"])))
    present = {(o["colour"], o["shape"]) for o in objects}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    colour, shape = rng.choice(absent)
    qa.append((f"is there a {colour} {shape}?", "no"))
    obj = rng.choice(objects)
    qa.append((f"is there a {obj['colour']} {obj['shape']}?", "yes"))
    return qa


def scenes_captioning(num_images: int, seed: int = 0, size: int = 32):
    """``datasets.Dataset`` with ``image`` and ``captions`` (3 references per image)."""
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    rng = random.Random(seed)
    images, captions = [], []
    for _ in range(num_images):
        scene = make_scene(rng, size)
        images.append(scene["image"])
        captions.append(captions_for(scene["objects"]))
    features = Features({"image": ImageFeature(), "captions": Sequence(Value("string"))})
    return Dataset.from_dict({"image": images, "captions": captions}, features=features)


def scenes_vqa(num_images: int, seed: int = 0, size: int = 32):
    """``datasets.Dataset`` with one row per question: ``image``, ``question``, ``answers`` (10), ``image_id``."""
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    rng = random.Random(seed)
    rows = {"image": [], "question": [], "answers": [], "image_id": []}
    for index in range(num_images):
        scene = make_scene(rng, size)
        for question, answer in questions_for(scene["objects"], rng):
            rows["image"].append(scene["image"])
            rows["question"].append(question)
            rows["answers"].append([answer] * NUM_ANSWERS)
            rows["image_id"].append(index)
    features = Features(
        {
            "image": ImageFeature(),
            "question": Value("string"),
            "answers": Sequence(Value("string")),
            "image_id": Value("int64"),
        }
    )
    return Dataset.from_dict(rows, features=features)


__all__ = ["captions_for", "make_scene", "questions_for", "scenes_captioning", "scenes_vqa"]
