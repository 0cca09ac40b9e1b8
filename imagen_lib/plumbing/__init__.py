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
Nothing here imports a taught module when it is imported, so any taught module may import it.
"""
