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
    setting_checks.py  the range checks of settings several places take (guidance, stage index)
    plans.py      a sampling run's settings, one per stage: "one value or one per stage" made so
    cascade_checks.py  the range checks of a cascade's configs and of sampling's low_res images
    config_files.py    a stored cascade config (JSON lists, older files) made ready for its class
    safe_loading.py    loading torch files and encoder folders without running code they hold
    encoder_loading.py where the offline text encoders are; loading a cut-down one quietly
    overrides.py  training settings written as text, field=value (the command line's)
    exporting.py  a trained cascade exported as a small file for sampling
Nothing here imports a taught module when it is imported, so any taught module may import it;
except cascade_checks.py (which only cascade.py imports) and exporting.py (which no taught
module imports): they build on taught modules.
"""
