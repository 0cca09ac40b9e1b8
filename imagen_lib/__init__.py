"""imagen_lib: Google's Imagen (Saharia et al. 2022, arXiv 2205.11487), small enough to learn from.

Read the modules in this order; each is one lesson's concept:
    data.py            MNIST digits and their text prompts
    diffusion.py       noise schedules, loss, samplers, guidance, thresholding
    layers.py          residual blocks, attention, text pooling
    unet.py            the base U-Net (Improved DDPM)
    text.py            the frozen pretrained text encoder
    efficient_unet.py  the super-resolution Efficient U-Net
    cascade.py         the Imagen pipeline: base + super-resolution stages
    metrics.py         prompt accuracy and MNIST-FID
    presets.py         named architectures and training settings
    train.py           training every stage, resumable exactly
    checkpoint.py      saving and loading safely
    scenes.py          two digits side by side: prompts whose meaning needs word order
    colours.py         the same scenes in colour: colour words bound to their digits
Runtime machinery that no lesson teaches lives in imagen_lib/plumbing/ (the shipped files,
the download cache, atomic writes, the run folder's lock, the hub probe), and tooling in
imagen_lib/tools/: the command line (`python -m imagen_lib`), sampling to files,
evaluation, bench, the paper's findings, results, plots, widgets.

Importing this package loads no model and touches no network. It does set one
environment variable, before torch is imported, unless you set it yourself:
GOMP_SPINCOUNT=1000. OpenMP's worker threads otherwise spin for a long time while they
wait for work; on a 2-core machine that is fine alone but, as soon as a second torch
process runs beside it, each process's spinning threads steal the other's cores and
both become 5-40x slower. Spinning briefly keeps the single-process speed and avoids the
collapse (docs/measurements.md). Set OMP_WAIT_POLICY or GOMP_SPINCOUNT to
choose otherwise, or OMP_NUM_THREADS=1 for background jobs.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from imagen_lib.cascade import Imagen, ImagenConfig, StageConfig, default_device
from imagen_lib.efficient_unet import EfficientUNet, EfficientUNetConfig
from imagen_lib.unet import UNet, UNetConfig

__version__ = "0.1.0"
__all__ = [
    "EfficientUNet",
    "EfficientUNetConfig",
    "Imagen",
    "ImagenConfig",
    "StageConfig",
    "UNet",
    "UNetConfig",
    "default_device",
]
