"""Families of scene captions: every caption of every scene, numbered, and prompts drawn from them.

Lesson 10. A `SceneCaptions` is to scenes of two digits what `data.Captions` is to single
digits, with its interface (`vocabulary()`, `draw(labels, generator)`): every template of
the scene language (`imagen_lib.scene_language`) that applies to a scene, filled with every
name form, numbered so that the trainer draws a batch of captions as a tensor of indices
into a table of precomputed embeddings. `scene_prompts` and `labelled_prompts` draw
evaluation prompts from a family, each with its meaning (`ScenePrompt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from imagen_lib.data import NAME_FORMS
from imagen_lib.scene_language import (
    ALL_PAIRS,
    COLOURED_CATEGORIES,
    HELD_OUT_PHRASINGS,
    HELD_OUT_SCENE_TEMPLATES,
    SCENE_TEMPLATES,
    Pair,
    ScenePrompt,
    SceneTemplate,
    applies,
    check_pairs,
    phrasing_of,
)


@dataclass(frozen=True)
class SceneCaptions:
    """A family of scene captions, with the interface of data.Captions.

    Every template that applies to a scene, filled with every name form, for every scene:
    the 100 pairs (held-out pairs included: the table of caption embeddings may hold them,
    but the trainer draws captions only for the labels of its scenes, which are training
    pairs), or, for a family of colour scenes, the 100 pairs in each of its `colourings`.
    Templates that do not apply to a pair (repeat for 3 7, number for 0 7) get no caption
    for it, so ids are not a product of sizes as in data.Captions: `first_ids` maps a scene
    and a template to the id of its first form.
    """

    templates: tuple[SceneTemplate, ...]
    forms: tuple[str, ...]
    # Each template's relative weight, where it applies. The default gives every category
    # that applies to a pair the same share, split evenly between its templates.
    template_weights: tuple[float, ...]
    # For colour scenes (imagen_lib.colours): the (left colour, right colour) of each
    # colouring. Empty for grey scenes, labelled by their pair index 0-99; a colour scene's
    # label is 100 * its colouring's index + its pair index (`scenes` lists them in order).
    colourings: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(
        cls,
        templates: dict[str, tuple[str, ...]],
        forms: tuple[str, ...] = NAME_FORMS,
        colourings: tuple[tuple[str, str], ...] = (),
    ) -> SceneCaptions:
        """A family from {category: template texts}, categories weighted equally."""
        return cls(
            tuple(
                SceneTemplate(category, text, phrasing_of(text))
                for category in templates
                for text in templates[category]
            ),
            forms,
            tuple(1 / len(texts) for texts in templates.values() for _ in texts),
            colourings,
        )

    def __post_init__(self) -> None:
        if not self.templates or not self.forms:
            raise ValueError("a caption family needs at least one template and one name form")
        if len(self.template_weights) != len(self.templates):
            raise ValueError(
                f"{len(self.templates)} templates but {len(self.template_weights)} weights"
            )
        uncoloured = set(self.categories) - set(COLOURED_CATEGORIES)
        if self.colourings and uncoloured:
            raise ValueError(
                f"a family of colour scenes has {' and '.join(COLOURED_CATEGORIES)} templates "
                f"only (they name each digit, to colour it), got {sorted(uncoloured)}"
            )

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(template.category for template in self.templates))

    @cached_property
    def scenes(self) -> tuple[tuple[int, int, tuple[str, str] | None], ...]:
        """Every scene the family describes, by label: (left, right, colours or None)."""
        return tuple(
            (left, right, colours)
            for colours in self.colourings or (None,)
            for left, right in ALL_PAIRS
        )

    @cached_property
    def first_ids(self) -> torch.Tensor:
        """(S, T): the id of the first caption of each scene and template; -1 where none."""
        ids = torch.full((len(self.scenes), len(self.templates)), -1, dtype=torch.long)
        next_id = 0
        for label, (left, right, _) in enumerate(self.scenes):
            for t, template in enumerate(self.templates):
                if applies(template.category, left, right):
                    ids[label, t] = next_id
                    next_id += len(self.forms)
        return ids

    @cached_property
    def scene_weights(self) -> torch.Tensor:
        """(S, T): each template's weight for each scene, 0 where it does not apply."""
        return (self.first_ids >= 0) * torch.tensor(self.template_weights)

    def prompts(self) -> list[ScenePrompt]:
        """Every caption with its meaning, in id order."""
        return [
            template.prompt(left, right, form, colours)
            for left, right, colours in self.scenes
            for template in self.templates
            if applies(template.category, left, right)
            for form in self.forms
        ]

    def vocabulary(self) -> list[str]:
        """Every caption, in id order."""
        return [prompt.text for prompt in self.prompts()]

    def check_can_caption(self, pairs: Sequence[Pair]) -> None:
        """Raise a ValueError if some pair has no caption here (call once, before `draw`)."""
        cannot = [
            (left, right)
            for left, right in check_pairs(pairs)
            if not self.scene_weights[10 * left + right].any()
        ]
        if cannot:
            raise ValueError(f"this caption family has no caption for the pairs {cannot}")

    def draw(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random caption id (B,) per scene label (B,), on the labels' device.

        Only templates that apply to a pair are drawn for it (per-scene weights). The labels
        are not checked here, which would wait for the device at every training step: check
        the pairs once with `check_can_caption`.
        """
        weights = self.scene_weights.to(labels.device)[labels]  # (B, T)
        template = torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (B,)
        # (B,)
        form = torch.randint(
            len(self.forms), (len(labels),), generator=generator, device=labels.device
        )
        return self.first_ids.to(labels.device)[labels, template] + form


SCENE_CAPTIONS = SceneCaptions.build(SCENE_TEMPLATES)
HELD_OUT_SCENE_CAPTIONS = SceneCaptions.build(HELD_OUT_SCENE_TEMPLATES)

# What the trainer draws from (TrainConfig.captions "scenes"), and its twin in the held-out
# phrasings: numerals and lower-case words only. MiniLM lower-cases its input, so "Seven"
# and "SEVEN" would only repeat "seven", doubling the table of caption embeddings (5,200
# captions instead of 10,400) for nothing.
TRAINING_NAME_FORMS = ("{numeral}", "{word}")
TRAINING_SCENE_CAPTIONS = SceneCaptions.build(SCENE_TEMPLATES, TRAINING_NAME_FORMS)
# One family per type of held-out phrasing, in all of NAME_FORMS (for evaluation)
HELD_OUT_CAPTIONS_BY_PHRASING = {
    phrasing: SceneCaptions.build(templates) for phrasing, templates in HELD_OUT_PHRASINGS.items()
}
HELD_OUT_TRAINING_SCENE_CAPTIONS = SceneCaptions.build(
    HELD_OUT_SCENE_TEMPLATES, TRAINING_NAME_FORMS
)


def scene_prompts(
    family: SceneCaptions,
    pairs: Sequence[Pair],
    count: int,
    categories: Sequence[str] | None = None,
    seed: int = 0,
) -> list[ScenePrompt]:
    """`count` prompts of a family of grey scenes for some pairs, reproducible for a seed.

    `labelled_prompts` for the pairs' labels, 10 * left + right.
    """
    if family.colourings:
        raise ValueError(
            "this family describes colour scenes: draw its prompts with "
            "colours.colour_scene_prompts, which names each scene's colours too"
        )
    labels = [10 * left + right for left, right in check_pairs(pairs)]
    return labelled_prompts(family, labels, count, categories, seed)


def labelled_prompts(
    family: SceneCaptions,
    labels: Sequence[int],
    count: int,
    categories: Sequence[str] | None = None,
    seed: int = 0,
) -> list[ScenePrompt]:
    """`count` prompts of a family for some of its scenes, given by their labels.

    The labels index `family.scenes`. The categories take turns; each cycles through the
    scenes it applies to (in a seeded shuffle), so the scenes appear equally often, with a
    random template of the category and a random name form. Reproducible for a seed.
    """
    outside = [label for label in labels if not 0 <= label < len(family.scenes)]
    if outside:
        raise ValueError(f"scene labels must be in 0-{len(family.scenes) - 1}, got {outside}")
    if count < 0:
        raise ValueError(f"count must be 0 or more prompts, got {count}")
    categories = tuple(categories) if categories is not None else family.categories
    unknown = [category for category in categories if category not in family.categories]
    if unknown or not categories:
        raise ValueError(f"categories must be some of {family.categories}, got {categories}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator).tolist()
    pools = {}
    for category in categories:
        pools[category] = (
            [labels[i] for i in order if applies(category, *family.scenes[labels[i]][:2])],
            [template for template in family.templates if template.category == category],
        )
        if not pools[category][0]:
            pairs = [family.scenes[label][:2] for label in labels]
            raise ValueError(f"no {category} caption describes any of the pairs {pairs}")
    prompts = []
    for i in range(count):
        category = categories[i % len(categories)]
        category_labels, templates = pools[category]
        left, right, colours = family.scenes[
            category_labels[i // len(categories) % len(category_labels)]
        ]
        template = templates[int(torch.randint(len(templates), (), generator=generator))]
        form = family.forms[int(torch.randint(len(family.forms), (), generator=generator))]
        prompts.append(template.prompt(left, right, form, colours))
    return prompts
