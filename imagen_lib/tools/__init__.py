"""Tooling around the model, not taught by the lessons.

cli.py (`python -m imagen_lib`) parses and calls one function per command: sampling.py,
evaluation.py, bench.py (with its profiling) and experiments.py (the paper's findings,
their registry and defaults), whose tables and plots results.py makes. plotting.py,
diagrams.py (the networks drawn from a traced forward pass) and widgets.py draw for the
notebooks, lessons.py holds the notebooks' helpers and
repository.py the maintenance command that points the lessons at a published copy.
The model's modules in imagen_lib/ never import from here.
"""
