"""The pieces of ``benchmarks/throughput.py`` (its docstring says what is measured and how), one purpose a module:

* ``models``: the benchmarked shapes (GPU sizes, CI-sized CPU stand-ins); ``implementations``: parsing names such
  as ``sovit_triton+mlp+ln+compile`` and the default matrix; ``settings``: what a run measures, per device.
* ``builds``: seeded random weights in the SigLIP and SoViT layouts, and the models of every implementation on them.
* ``timing``: one timed call, the matmul peak, interleaved rounds, the largest-batch search, peak memory.
* ``checks``: relative error against the higher-precision reference, its limit, the training (gradient) check.
* ``units``: the plan of a run; ``inference`` and ``training``: running one unit of each mode.
* ``records``: one result record, MFU, record keys and merging; ``environment``: device and library versions.
* ``storage``: where result files live, reading and atomic writing; ``readme_table``: the README table.
"""
