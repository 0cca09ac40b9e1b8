"""Plumbing, not a lesson: one sampling run's settings, one entry per stage of the cascade.

`Imagen.sample`, `Imagen.with_stage_settings` and an export's recommended settings take each
per-stage setting (sampler, steps, guidance weight and interval, augmentation level) as one
value for every stage, as one value per stage, or as None for each stage's own
recommendation. `stages_with` is the one place such values become one per stage: it writes
them into each stage's `StageConfig`, which checks them, so a stage's settings are checked
there and nowhere else. A `SamplingPlan` holds those stages with what the whole run shares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imagen_lib.plumbing.errors import BadSetting, ImagenError
from imagen_lib.plumbing.setting_checks import check_stage_index

if TYPE_CHECKING:  # annotations only: the cascade imports this module
    from imagen_lib.cascade import StageConfig


def stages_with(stages: Sequence[StageConfig], **settings: object) -> tuple[StageConfig, ...]:
    """`stages` with the StageConfig fields named in `settings` replaced, stage by stage.

    A setting is None (each stage keeps its own), one value for every stage (or a list of
    one), or a list or tuple of one value per stage. A guidance interval is itself a pair:
    (0.3, 0.8) is one interval for every stage, [(0.3, 0.8), (0.0, 1.0)] one per stage.
    """
    columns = {}
    for name, value in settings.items():
        if value is None:
            continue
        per_stage = isinstance(value, (list, tuple)) and not (
            name == "guidance_interval" and value and not isinstance(value[0], (list, tuple))
        )
        if not per_stage:
            value = [value]
        if len(value) == 1:
            value = list(value) * len(stages)
        if len(value) != len(stages):
            raise BadSetting(
                f"give one {name}, or one per stage ({len(stages)}), got {list(value)}",
                **{name: None},
            )
        columns[name] = value
    replaced = []
    for index, stage in enumerate(stages):
        try:  # each stage checks its new settings as it is made
            changes = {name: column[index] for name, column in columns.items()}
            replaced.append(dataclasses.replace(stage, **changes))
        except (TypeError, ValueError) as error:
            raise for_stage(error, index) from None
    return tuple(replaced)


def for_stage(error: Exception, index: int) -> Exception:
    """`error`, of the same kind, with the stage it concerns named first: "stage 1: ..."."""
    if isinstance(error, ImagenError):
        return type(error)(f"stage {index}: {error.problem}", error.hint, **error.settings)
    return type(error)(f"stage {index}: {error}")


@dataclass(frozen=True)
class SamplingPlan:
    """What one run of `Imagen.sample` does at each stage of a cascade.

    `stages` holds every stage's config with the settings of this run written in: its
    sampler, sampling_steps, guidance_weight, guidance_interval and sampling_augmentation.
    The run samples stages `first_stage` to `last_stage`, each with DDIM noise `eta`.
    """

    stages: tuple[StageConfig, ...]
    first_stage: int
    last_stage: int
    eta: float = 0.0

    def __post_init__(self) -> None:
        check_stage_index(self.first_stage, len(self.stages))
        check_stage_index(self.last_stage, len(self.stages))
        if self.last_stage < self.first_stage:
            raise BadSetting(
                f"last_stage ({self.last_stage}) comes before first_stage ({self.first_stage}): "
                "no stage would run"
            )
        samplers = [self.stages[stage].sampler for stage in self.running]
        if self.eta != 0 and any(sampler != "ddim" for sampler in samplers):
            raise BadSetting(
                f"eta only applies to the ddim sampler, and the stages sample with {samplers}",
                "leave eta at 0, or sample with ddim",
                eta=0,
                sampler="ddim",
            )

    @classmethod
    def build(
        cls,
        stages: Sequence[StageConfig],
        sampler: str | Sequence[str] | None = None,
        steps: int | Sequence[int | None] | None = None,
        guidance_weight: float | Sequence[float] | None = None,
        guidance_interval: tuple[float, float] | None = None,
        augmentation_level: float | None = None,
        eta: float = 0.0,
        first_stage: int = 0,
        last_stage: int | None = None,
    ) -> SamplingPlan:
        """The plan for `Imagen.sample`'s arguments: each setting None, one value, or one per stage.

        Each stage keeps its own recommendation for a setting given as None. A recommended
        guidance interval was chosen together with its weight, so a weight given without an
        interval guides at every step. `last_stage` None is the last stage.
        """
        if guidance_weight is not None and guidance_interval is None:
            guidance_interval = (0.0, 1.0)
        stages = stages_with(
            stages,
            sampler=sampler,
            sampling_steps=steps,
            guidance_weight=guidance_weight,
            guidance_interval=guidance_interval,
            sampling_augmentation=augmentation_level,
        )
        last_stage = len(stages) - 1 if last_stage is None else last_stage
        return cls(stages, first_stage, last_stage, eta)

    @property
    def running(self) -> range:
        """The indices of the stages this run samples, in order."""
        return range(self.first_stage, self.last_stage + 1)
