"""Plumbing: runtime machinery the lessons do not teach; one short module per concern.

The taught modules (imagen_lib/*.py) call these so that each reads as its lesson's method:
    errors.py     the library's errors: one small hierarchy, each error with a hint
    files.py      the shipped files, the download cache, atomic writes, paths checked early
    configs.py    every config's values checked against the types its fields are annotated with
    locks.py      one training process per run folder (a lock file)
    compiling.py  when training compiles the networks with torch.compile
    timing.py     measured training throughput, waiting for the device
    hub.py        whether the Hugging Face model hub answers, in a few seconds
    datasets.py   your own captioned images to train on (train --data), every file checked
    distributed.py  several training processes as one, started by torchrun
    norms.py      the norm of many tensors as one vector, in three operations
    compile_fallback.py  training on without torch.compile where compiling fails
    divergence.py  telling that training diverged (the trainer stops before it saves)
    run_folders.py  a run folder made ready for training: its lock, its disk room
The modules above import no taught module when they are imported, so any taught module may
import them. Those below serve the trainer (imagen_lib/train.py) and its tools, and import
the taught modules the trainer builds on (the digits, the scenes, the presets, the checkpoint
format), never train.py itself:
    training_data.py   the images a run trains on, and the checks that keep them fair
    training_grids.py  what the sample grids written while training show, and their score
    resuming.py        whether a training checkpoint can be resumed, checked before loading
"""
