"""sovit_hf: shape-optimised vision transformers (SoViT) as native transformers models.

Install torch first (on CPU machines: ``pip install torch==2.13.0``, the CPU wheel), then ``pip install -e .``:
the torch requirement below is a floor that an installed torch satisfies, so nothing pulls CUDA wheels.
"""

from setuptools import find_packages, setup

setup(
    name="sovit_hf",
    version="0.1.0",
    description="SoViT (Getting ViT in Shape, arXiv 2305.13035) and the Scaling-ViT family as transformers models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # Only sovit_hf (the converter is sovit_hf.conversion); the top-level conversion/ folder holds runnable scripts.
    packages=find_packages(include=["sovit_hf", "sovit_hf.*"]),
    # The `sovit` command's entry point, outside the package so that `sovit --help` imports neither torch nor
    # transformers (importing any sovit_hf module first runs the package's __init__).
    py_modules=["sovit_cli"],
    install_requires=[
        "torch>=2.6",
        "transformers>=5.17,<6",
        "safetensors>=0.4",
        "huggingface-hub>=1.33",
        "numpy>=1.26",
        "scipy>=1.11",
        "pillow>=10",
        "tqdm>=4.60",
        "tokenizers>=0.22",
        # Triton kernels (sovit_hf.kernels): imported only when a Triton path is requested; on CPU they run under
        # TRITON_INTERPRET=1 (how CI tests them).
        "triton>=3.6; platform_system == 'Linux'",
    ],
    extras_require={
        # Trainer recipes: datasets for data, accelerate for Trainer, scikit-learn ships the embedded digits data,
        # matplotlib draws training curves and scaling-law plots. `import sovit_hf` needs none of them.
        "train": ["datasets>=3", "accelerate>=1.1", "scikit-learn>=1.3", "matplotlib>=3.7"],
        # Captioning / VQA metrics: CIDEr (pycocoevalcap's scorer) and BLEU (sacrebleu); evaluate for the metric
        # modules in sovit_hf/metrics (without it the recipes call the same functions directly).
        "text": ["pycocoevalcap>=1.2", "sacrebleu>=2.4", "evaluate>=0.4.6"],
        "triton": ["triton>=3.6"],
        # Two towers: SoViTSiglipTokenizer reads big_vision's SentencePiece .model files.
        "siglip": ["sentencepiece>=0.2"],
        "plot": ["matplotlib>=3.7"],
        # The ecosystem's clients that tests/ecosystem runs SoViT through (LoRA adapters, ONNX export + onnxruntime).
        "ecosystem": ["peft>=0.17", "onnx>=1.17", "onnxruntime>=1.20", "onnxscript>=0.3"],
        "dev": [
            "pytest>=8",
            "ruff>=0.6",
            "datasets>=3",
            "accelerate>=1.1",
            "scikit-learn>=1.3",
            "matplotlib>=3.7",
            "pycocoevalcap>=1.2",
            "sacrebleu>=2.4",
            "evaluate>=0.4.6",
            "peft>=0.17",
            "onnx>=1.17",
            "onnxruntime>=1.20",
            "onnxscript>=0.3",
            "parameterized>=0.9",  # transformers' test mixins (tests/ecosystem) import it
            "sentencepiece>=0.2",
            "triton==3.6.0; platform_system == 'Linux'",  # the version CI tests
        ],
    },
    # evaluate metric scripts (sovit_hf/metrics/<name>/<name>.py) are data: evaluate.load copies and imports them.
    package_data={"sovit_hf.scaling": ["data/*.csv"], "sovit_hf.metrics": ["*/*.py"]},
    entry_points={"console_scripts": ["sovit=sovit_cli:main"]},
)
