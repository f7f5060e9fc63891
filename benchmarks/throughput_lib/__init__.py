"""The pieces of ``benchmarks/throughput.py`` (its docstring says what is measured and how):

* ``matrix``: what is benchmarked (model shapes, implementation names and the default matrix, per-device settings);
* ``build``: the models of every implementation on one set of seeded weights, the reference and the correctness checks;
* ``run``: the plan of units, timing and memory, and running one inference or training unit;
* ``results``: records, MFU, the result files, the README table and the plot.
"""
