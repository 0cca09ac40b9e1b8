"""Sampling many images from a checkpoint into files: `python -m imagen_lib sample`.

`sample_to_folder` checks every argument before the model loads (the sampler and steps
against the checkpoint's config, read without building the model), samples `SAMPLE_CHUNK`
images at a time, and writes the grids and an .npz of every image as one set: a failure,
such as a full disk, leaves the previous set whole. `final_images` is the chunked sampling
it and the experiments share.
"""

from __future__ import annotations

import re
import stat
import time
import unicodedata
from pathlib import Path

import numpy as np
import torch

from imagen_lib.cascade import default_device
from imagen_lib.checkpoint import load_imagen, read_checkpoint
from imagen_lib.data import LESSON_PROMPTS
from imagen_lib.diffusion import THRESHOLDINGS, check_guidance_interval, check_guidance_weight
from imagen_lib.plumbing.files import (
    atomic_write_all,
    existing_checkpoint,
    grid_writer,
    writable_folder,
)
from imagen_lib.plumbing.training_grids import COLOUR_GRID_PROMPTS, SCENE_GRID_PROMPTS
from imagen_lib.tools.common import at_least, check_seed
from imagen_lib.tools.drawing import (
    SAMPLE_CHUNK,
    check_plan,
    checkpoint_config,
    describe_plan,
    final_images,
)

# Every final image stays in memory until samples.npz is written (100,000 32x32 images
# take 400 MiB as floats), and on a CPU 100,000 take hours: sample more in several runs.
MAX_SAMPLES = 100_000
MAX_PROMPTS_FILE = 2**20  # 1 MiB: more than any prompt list needs, and quick to read
# What looks like a tokenizer's special token: [PAD] [CLS] [SEP] [MASK] [UNK] (BERT-like
# encoders such as MiniLM), </s> <pad> <unk> <extra_id_0> (T5), <|endoftext|> (CLIP).
# A tokenizer reads these as its control tokens wherever they stand, not as text.
SPECIAL_TOKEN = re.compile(r"\[[A-Z]{3,}\]|</?[a-z][a-z0-9_]*>|<\|[a-z0-9_]+\|>")


def read_prompts(prompts: list[str] | None, prompts_file: str | Path | None) -> list[str]:
    """`prompts`, else the lines of `prompts_file` (blank ones skipped), else the lesson's 64.

    Every prompt is checked as `check_prompt` does; an error names the prompt or the line.
    """
    if prompts_file is not None:
        lines = read_prompts_file(prompts_file)
        numbered = [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]
        if not numbered:
            raise ValueError(
                f"--prompts-file {prompts_file} holds no prompts: write one prompt per line"
            )
        for number, prompt in numbered:
            check_prompt(prompt, f"--prompts-file {prompts_file}: line {number}")
        return [prompt for _, prompt in numbered]
    if prompts is None:
        return list(LESSON_PROMPTS)
    for number, prompt in enumerate(prompts, 1):
        if not prompt.strip():
            raise ValueError(
                f"--prompts: prompt {number} is empty; give one prompt per argument, "
                'such as --prompts 7 "a handwritten 7" seven'
            )
        check_prompt(prompt, f"--prompts: prompt {number}")
    return prompts


def read_prompts_file(path: str | Path) -> list[str]:
    """The lines of a regular UTF-8 text file of at most MAX_PROMPTS_FILE bytes.

    At most one byte past the limit is read, so /dev/zero or a huge file cannot fill the
    memory, and a pipe is refused before it is opened (opening one waits for a writer).
    A leading byte order mark, which some Windows editors write, is dropped. Lines end at
    "\n" only (and "\r\n"): str.splitlines would also split at control characters such as
    \x0b and \x1c, turning one line into several prompts.
    """
    fix = "give a text file with one prompt per line"
    if str(path) == "":
        raise ValueError(f"--prompts-file is empty: {fix}")

    def unreadable(error: OSError) -> ValueError:
        return ValueError(f"--prompts-file {path} cannot be read ({error.strerror}): {fix}")

    try:
        mode = Path(path).stat().st_mode
    except OSError as error:
        raise unreadable(error) from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"--prompts-file {path} is a folder: {fix}")
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"--prompts-file {path} is not a regular file (a pipe, a device or a socket): {fix}"
        )
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PROMPTS_FILE + 1)
    except OSError as error:
        raise unreadable(error) from None
    if len(data) > MAX_PROMPTS_FILE:
        raise ValueError(
            f"--prompts-file {path} is larger than 1 MiB: {fix}, at most {MAX_SAMPLES} of them"
        )
    try:
        return data.decode("utf-8-sig").split("\n")  # a "\r" left is stripped with the spaces
    except UnicodeDecodeError as error:
        raise ValueError(
            f"--prompts-file {path} cannot be read (not UTF-8 text: byte {error.start}): "
            "save it as UTF-8"
        ) from None


def check_prompt(prompt: str, where: str) -> None:
    """Refuse a prompt the text encoder would misread, naming it by `where`.

    Bytes that are not UTF-8 (Python passes them on from the command line as surrogate
    escapes, which the tokenizer rejects only after the model has loaded), a control
    character such as NUL or \x0b (not text: tokenizers drop it or read it as unknown),
    or a special token such as [PAD], which a tokenizer reads as its control token.
    """
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{where} is not UTF-8 text ({ascii(prompt)}): "
            "give prompts in UTF-8, the usual encoding of terminals and files"
        ) from None
    control = next((char for char in prompt if unicodedata.category(char) == "Cc"), None)
    if control is not None and control != "\t":  # a tab reads as a space
        raise ValueError(
            f"{where} holds the control character U+{ord(control):04X}, which is not text: "
            "remove it (a prompts file holds one prompt per line)"
        )
    special = SPECIAL_TOKEN.search(prompt)
    if special:
        raise ValueError(
            f"{where} ({prompt!r}) holds {special.group()}, which text encoders read as a "
            "special token, not as text: leave it out"
        )


def default_prompts(checkpoint: Path) -> list[str]:
    """What `sample` draws without --prompts: the lesson's 64 digits, or for a cascade trained
    on scenes of two digits (captions "scenes" or "colour scenes") the 24 scene prompts of
    its training grids.

    A cascade trained on your own images (`train --data`) has no digit prompts to default to:
    it asks for prompts in one line.
    """
    preset = read_checkpoint(checkpoint).get("preset")  # a weights-only file has none
    training = preset["training"] if preset is not None else {}
    if training.get("data"):
        raise ValueError(
            f"{checkpoint} was trained on {training['data']}, not on digits: give --prompts or "
            "--prompts-file, in the words of its captions"
        )
    if training.get("captions") == "scenes":
        return list(SCENE_GRID_PROMPTS)
    if training.get("captions") == "colour scenes":
        return list(COLOUR_GRID_PROMPTS)
    return list(LESSON_PROMPTS)


def sample_count(
    prompts: list[str], num_samples: int | None, prompts_file: str | Path | None
) -> int:
    """How many images a run makes: `num_samples`, else one per prompt; at most MAX_SAMPLES."""
    if at_least(num_samples, 1, "--num-samples") is not None:
        if num_samples > MAX_SAMPLES:
            raise ValueError(
                f"--num-samples must be at most {MAX_SAMPLES}, got {num_samples}: every image "
                "stays in memory until the end; sample more in several runs, each with its --seed"
            )
        return num_samples
    if len(prompts) > MAX_SAMPLES:
        source = "--prompts" if prompts_file is None else f"--prompts-file {prompts_file}"
        raise ValueError(
            f"{source} holds {len(prompts)} prompts, and a run makes at most {MAX_SAMPLES} "
            "samples: sample them in several runs, or give --num-samples"
        )
    return len(prompts)


def output_names(stages: int) -> list[str]:
    """The files a run writes into OUT: each stage's grid, the final grid, every image."""
    return [*(f"grid_stage{index}.png" for index in range(stages)), "grid.png", "samples.npz"]


def check_options(
    guidance_weight: float | None,
    guidance_interval: tuple[float, float] | None,
    thresholding: str,
    steps: int | list[int] | None,
) -> tuple[float, float] | None:
    """Refuse a sampling option that cannot work; return the guidance interval as checked."""
    if guidance_weight is not None:
        check_guidance_weight(guidance_weight)
    if guidance_interval is not None:
        guidance_interval = check_guidance_interval(guidance_interval)
    if thresholding not in THRESHOLDINGS:
        raise ValueError(f"--thresholding must be one of {THRESHOLDINGS}, got {thresholding!r}")
    for steps_given in steps if isinstance(steps, list) else [steps]:
        at_least(steps_given, 1, "--steps", " (sampling steps per stage)")
    return guidance_interval


def write_samples(
    out: Path,
    names: list[str],
    shown: list[torch.Tensor],
    images: torch.Tensor,
    prompts: list[str],
) -> None:
    """Write every stage's grid of `shown`, the final grid and samples.npz into `out`, as one set.

    `shown` are the first images of every stage (each (N, C, H, W) in [-1, 1]), `images` all
    the final ones, saved as uint8 with their `prompts`; `names` the files, as `output_names`.
    """
    columns = 8 if len(shown[-1]) % 8 == 0 else min(len(shown[-1]), 10)
    # a row of scenes of two digits side by side (2:1) as wide as a row of single digits
    height, width = shown[-1].shape[-2:]
    columns = max(1, columns // max(1, width // height))
    pixels = ((images * 0.5 + 0.5) * 255).round().clamp(0, 255).numpy().astype(np.uint8)
    writers = [grid_writer(stage_images, columns) for stage_images in [*shown, shown[-1]]]
    writers.append(lambda file: np.savez(file, images=pixels, prompts=np.array(prompts)))
    # all or nothing: a failure (a full disk) leaves the previous run's files, never a mix
    atomic_write_all(out, dict(zip(names, writers)), "samples")


def sample_to_folder(
    out: str | Path,
    checkpoint: str | Path | None = None,
    prompts: list[str] | None = None,
    prompts_file: str | Path | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    guidance_weight: float | None = None,
    guidance_interval: tuple[float, float] | None = None,
    thresholding: str = "dynamic",
    sampler: str | list[str] | None = None,
    steps: int | list[int] | None = None,
) -> Path:
    """Sample from a checkpoint (default: the shipped one) into grids and an .npz in OUT.

    The grids show the first SAMPLE_CHUNK images (every stage's); samples.npz holds every
    final image as uint8 (N, C, H, W) with its prompt. They are written as one set: a
    failure midway, such as a full disk, leaves the previous run's files. Returns the grid's
    path.
    """
    checkpoint = existing_checkpoint(checkpoint)
    given = prompts is not None or prompts_file is not None
    prompts = read_prompts(prompts, prompts_file)
    count = sample_count(prompts, num_samples, prompts_file)
    guidance_interval = check_options(guidance_weight, guidance_interval, thresholding, steps)
    check_seed(seed)
    out = writable_folder(out)
    config = checkpoint_config(checkpoint)
    check_plan(config, sampler, steps)
    if not given:  # chosen only now: a bad argument is refused before the checkpoint is read
        prompts = default_prompts(checkpoint)
        count = num_samples or len(prompts)
    prompts = [prompts[i % len(prompts)] for i in range(count)]
    names = output_names(len(config.stages))
    for path in (out / name for name in names):
        if path.is_dir():
            raise ValueError(
                f"{path} is a folder, where sampling writes a file: "
                "move it away, or choose another --out"
            )
    print(f"loading checkpoint {checkpoint} and its text encoder ...", flush=True)
    model = load_imagen(checkpoint, weights="ema", device=default_device())
    print(f"sampling with {describe_plan(config, sampler, steps)}", flush=True)
    options = dict(
        guidance_weight=guidance_weight,
        guidance_interval=guidance_interval,
        thresholding=thresholding,
        sampler=sampler,
        steps=steps,
        progress=True,
    )
    started = time.perf_counter()
    shown = model.sample(prompts[:SAMPLE_CHUNK], seed=seed, **options)  # every stage: the grids
    images = shown[-1].cpu()
    if len(prompts) > SAMPLE_CHUNK:  # the rest, seeded as final_images seeds its chunks
        rest = prompts[SAMPLE_CHUNK:]
        more = final_images(model, rest, seed + SAMPLE_CHUNK, chunk=SAMPLE_CHUNK, **options)
        images = torch.cat([images, more])
    seconds = time.perf_counter() - started
    if not all(torch.isfinite(stage).all() for stage in [*shown, images]):
        raise ValueError(
            f"the samples contain NaN or infinite values (are {checkpoint}'s weights diverged?): "
            "nothing was saved"
        )
    write_samples(out, names, shown, images, prompts)
    count = len(prompts)
    grids = f" (the grids show the first {SAMPLE_CHUNK})" if count > SAMPLE_CHUNK else ""
    print(
        f"{count} sample{'' if count == 1 else 's'} in {seconds:.1f} s -> {out}: "
        f"{', '.join(names)}{grids}"
    )
    return out / "grid.png"
