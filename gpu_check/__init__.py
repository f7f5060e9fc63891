"""The GPU check: one run of at most 8 minutes on a GPU machine (``bash gpu_check/run.sh OUT``), see docs/kernels.md."""
