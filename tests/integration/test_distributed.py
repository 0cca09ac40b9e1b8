"""Tests of training in several processes (imagen_lib.plumbing.distributed), as torchrun runs it.

Real processes: `python -m torch.distributed.run --standalone --nproc_per_node 2 -m imagen_lib
train --preset smoke ...`, on the CPU with gloo, a few steps each (20 to 40 s a run on 2 cores).
What is checked:
- two processes at the same global batch end with the weights, EMA weights and generator
  states of one process, up to float rounding, and write one checkpoint and one set of grids;
- a resumed two-process run ends as an uninterrupted one, bit for bit;
- a process that dies ends the run with a non-zero exit and one line saying which checkpoint is
  kept; that checkpoint loads, and resumes (here in one process) to the uninterrupted result;
- a batch the processes cannot share evenly is refused in one line.
A process started without torchrun's environment is alone, and trains as it always did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from imagen_lib.checkpoint import read_checkpoint
from imagen_lib.plumbing import distributed
from imagen_lib.plumbing.resuming import training_state

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch has no gloo backend"
)

REPOSITORY = Path(__file__).resolve().parents[2]
SMOKE = ("--preset", "smoke", "--set", "sample_every=0")  # grids only where a test looks at them
# Stands in for `-m imagen_lib`: the same command, but the process of rank 1 dies (os._exit, as
# a killed process would) before its fourth step of stage 0, after the checkpoint of step 2.
DYING = """
    import os
    import sys

    from imagen_lib.tools.cli import main
    from imagen_lib.train import Trainer

    train_step = Trainer.train_step


    def dying_step(self, stage):
        if os.environ["RANK"] == "1" and stage == 0 and self.steps[stage] == 3:
            os._exit(1)
        return train_step(self, stage)


    Trainer.train_step = dying_step
    sys.exit(main(sys.argv[1:]))
"""


def environment() -> dict[str, str]:
    """This process's environment without torchrun's variables, finding this checkout."""
    env = {key: value for key, value in os.environ.items() if key not in distributed.ENVIRONMENT}
    return env | {"PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"}


def train(*arguments: str, processes: int = 2, program: Path | None = None):
    """Run `train ARGUMENTS` in `processes` processes under torchrun (1: plainly, no torchrun)."""
    entry = [str(program)] if program else ["-m", "imagen_lib"]
    if processes == 1:
        command = [sys.executable, *entry, "train", *arguments]
    else:
        torchrun = ["-m", "torch.distributed.run", "--standalone"]
        command = [sys.executable, *torchrun, f"--nproc_per_node={processes}", *entry, "train"]
        command += arguments
    return subprocess.run(
        command, env=environment(), capture_output=True, text=True, timeout=600, cwd=REPOSITORY
    )


def ran(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def assert_same_training(first: Path, second: Path, atol: float) -> None:
    """Two runs' checkpoints hold the same steps and generator states, and weights and EMA
    weights within `atol` (0: bit for bit)."""
    one, other = read_checkpoint(first), read_checkpoint(second)
    assert one["steps"] == other["steps"]
    assert all(torch.equal(a, b) for a, b in zip(one["generators"], other["generators"]))
    for weights in ("model", "ema"):
        assert one[weights].keys() == other[weights].keys()
        for key, value in one[weights].items():
            torch.testing.assert_close(value, other[weights][key], atol=atol, rtol=0, msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def three_steps(runs) -> dict[int, Path]:
    """Run folders of 3 steps per stage, with the smoke preset's sample grids, by 1 and 2
    processes."""
    folders = {count: runs / f"three_steps_{count}" for count in (1, 2)}
    for count, out in folders.items():
        ran(train("--preset", "smoke", "--steps", "3", "--out", str(out), processes=count))
    return folders


@pytest.fixture(scope="module")
def five_steps(runs) -> Path:
    """The checkpoint of an uninterrupted two-process run of 5 steps per stage."""
    ran(train(*SMOKE, "--steps", "5", "--out", str(runs / "five_steps")))
    return runs / "five_steps" / "checkpoint.pt"


def test_two_processes_train_as_one_and_the_first_alone_writes(three_steps):
    alone, together = three_steps[1], three_steps[2]
    assert_same_training(alone / "checkpoint.pt", together / "checkpoint.pt", atol=1e-5)
    # one checkpoint, one set of grids, no temporary files
    assert sorted(path.name for path in together.iterdir()) == [".lock", "checkpoint.pt", "samples"]
    grids = sorted(path.name for path in (together / "samples").iterdir())
    assert grids == ["stage0_step000003.png", "stage1_step000003.png"]


def test_a_resumed_two_process_run_ends_as_an_uninterrupted_one(three_steps, five_steps, runs):
    out = runs / "resumed"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes((three_steps[2] / "checkpoint.pt").read_bytes())
    result = ran(train(*SMOKE, "--resume", "--steps", "5", "--out", str(out)))
    assert result.stdout.count("resumed from") == 1  # printed by the first process only
    assert_same_training(out / "checkpoint.pt", five_steps, atol=0)


def test_a_dying_process_ends_the_run_in_one_line_and_its_checkpoint_resumes(
    five_steps, runs, tmp_path
):
    program = tmp_path / "dying.py"
    program.write_text(textwrap.dedent(DYING))
    out = runs / "killed"
    options = ("--steps", "5", "--set", "checkpoint_every=2", "--out", str(out))
    result = train(*SMOKE, *options, program=program)
    assert result.returncode != 0
    checkpoint = out / "checkpoint.pt"
    lines = error_lines(result)  # the dead process says nothing, the other one line
    assert len(lines) == 1, result.stderr[-3000:]
    assert "another process of the run ended" in lines[0]
    assert lines[0].endswith(f": {checkpoint} is kept; continue it with --resume")
    assert training_state(checkpoint)["steps"] == [2, 0]  # whole, as last saved
    assert not list(out.glob(".checkpoint.pt.*"))  # no half-written save left
    # resumed by one process: the generators' states do not depend on the process count
    ran(train(*SMOKE, "--resume", "--steps", "5", "--out", str(out), processes=1))
    assert_same_training(checkpoint, five_steps, atol=1e-5)


def test_a_batch_the_processes_cannot_share_evenly_is_refused_in_one_line(tmp_path):
    out = tmp_path / "run"
    result = train("--preset", "smoke", "--set", "batch_size=9", "--out", str(out))
    assert result.returncode != 0
    refusal = "batch_size 9 does not split evenly among 2 processes: give a multiple of 2"
    assert [refusal in line for line in error_lines(result)] == [True], result.stderr[-3000:]
    assert not out.exists()


def test_a_process_without_torchrun_is_alone(monkeypatch):
    for name in distributed.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    processes = distributed.from_environment()
    assert processes == distributed.Processes() and processes.alone and processes.writes
    assert processes.device is None  # the trainer's own choice
    network = torch.nn.Linear(2, 2)
    assert processes.parallel(network) is network and processes.sharded(network) is network
    assert distributed.current() == processes


@pytest.mark.parametrize(
    "variables, expected",
    [
        ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, distributed.Processes(1, 2, 1)),
        ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK must be in"),
        ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "whole numbers"),
    ],
)
def test_torchruns_environment_gives_each_process_its_place(variables, expected, monkeypatch):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            distributed.from_environment()
    else:
        assert distributed.from_environment() == expected


def test_each_process_takes_an_equal_block_of_a_batch():
    blocks = [distributed.Processes(rank, 4, rank).rows(12) for rank in range(4)]
    assert blocks == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)]
    with pytest.raises(ValueError, match="batch_size 10 does not split evenly among 4"):
        distributed.Processes(0, 4, 0).rows(10)
