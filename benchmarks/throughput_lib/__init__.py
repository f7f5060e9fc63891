"""The pieces of ``benchmarks/throughput.py`` (its docstring says what is measured and how):

* ``matrix``: what is benchmarked (model shapes, implementation names and the default matrix, per-device settings)
  and the plan of units (each unit's record keys);
* ``build``: the models of every implementation on one set of seeded weights, the reference and the correctness checks;
* ``results``: records, MFU, the result files, the README table and the plot;
* ``run``: timing and memory, and running one inference or training unit.

Each imports only those listed before it (``build`` and ``results`` import ``matrix``; ``run`` imports all three).
"""
