"""Tooling around the model, not taught by the lessons.

cli.py (`python -m imagen_lib`) builds its parser from commands.py, each command's options
beside the one function it calls: training.py, sampling.py, evaluation.py, bench.py (with
its profiling), encoders.py, and for `experiment` (experiment_command.py, whose EXPERIMENTS
table lists them all) experiments.py (the paper's findings, run by findings.py), scaling.py
and probe.py, whose tables and plots results.py makes (its KINDS table). They hang on
experiment_spine.py (the `Experiment` interface, the shared preparation step and sweep
loop); common.py holds the checks, the stopwatch and the retraining step they all share.
plotting.py, diagrams.py (the networks drawn from a traced forward pass) and widgets.py
draw for the notebooks, lessons.py holds the notebooks' helpers and repository.py the
maintenance command that points the lessons at a published copy. The model's modules in
imagen_lib/ never import from here.
"""
