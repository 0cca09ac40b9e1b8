"""Plumbing: runtime machinery the lessons do not teach; one short module per concern.

The taught modules (imagen_lib/*.py) call these so that each reads as its lesson's method.
These import no taught module when they are imported, so any taught module may import them:
    errors.py          the library's errors: one small hierarchy, each error with a hint
    files.py           the shipped files, the download cache, atomic writes, paths checked early
    configs.py         every config's values checked against the types its fields are annotated with
    setting_checks.py  the range checks of settings several places take (guidance, stage index)
    plans.py           a sampling run's settings, one per stage, from "one value or one per stage"
    config_files.py    a stored cascade config (JSON lists, older files) made ready for its class
    safe_loading.py    loading torch files and encoder folders without running code they hold
    encoder_loading.py where the offline text encoders are; loading a cut-down one quietly
    overrides.py       training settings written as text, field=value (the command line's)
    locks.py           one training process per run folder (a lock file)
    run_folders.py     a run folder made ready for training: its lock, its disk room
    compiling.py       when training compiles the networks with torch.compile
    compile_fallback.py  training on without torch.compile where compiling fails
    norms.py           the norm of many tensors as one vector, in three operations
    divergence.py      telling that training diverged (the trainer stops before it saves)
    timing.py          measured training throughput, waiting for the device
    hub.py             whether the Hugging Face model hub answers, in a few seconds
    datasets.py        your own captioned images to train on, every file checked
    distributed.py     several training processes as one, started by torchrun
These build on the taught modules (the digits, the scenes, the presets, the checkpoint format)
and serve one of them or the tools; none is imported by a module it builds on:
    cascade_checks.py  the range checks of a cascade's configs and of sampling's low_res images
    exporting.py       a trained cascade exported as a small file for sampling
    classifier_file.py the digit classifier's file: saving it, loading it checked
    training_data.py   the images a run trains on, and the checks that keep them fair
    training_grids.py  what the sample grids written while training show, and their score
    resuming.py        whether a training checkpoint can be resumed, checked before loading
"""
