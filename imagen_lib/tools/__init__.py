"""Tooling around the model, not taught by the lessons, in three layers.

1. Below everything, shared: common.py (the checks, the stopwatch, the retraining step),
   drawing.py (sampling many images and scene sets, and the sampler settings in words),
   results.py and plotting.py (results files, their tables and plots: the KINDS table),
   experiment_spine.py (the `Experiment` interface, the preparation step, the sweep loop)
   and experiments.py (the sweeps of the paper's findings, shown in lesson 9).
2. The work each command does, importing only from layer 1, never from each other:
   training.py, sampling.py, evaluation.py, bench.py (with its profiling), encoders.py,
   findings.py (the findings, run), scaling.py, probe.py, and for the notebooks
   diagrams.py (the networks drawn from a traced forward pass), widgets.py, lessons.py and
   repository.py (the maintenance command that points the lessons at a published copy).
3. The command line: cli.py (`python -m imagen_lib`) builds its parser from commands.py,
   each command's options beside the one function of layer 2 it calls, and from
   experiment_command.py, whose EXPERIMENTS table lists every experiment.

tests/integration/test_layering.py checks the layers. The model's modules in imagen_lib/
never import from here.
"""
