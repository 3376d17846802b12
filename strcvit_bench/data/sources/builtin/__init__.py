"""Offline procedural generators, one per task family.

Each family module exposes `sample(rng)` (a scene description), `render(scene, size, rng)`
(a PIL image), `ask(scene, rng, kinds)` (question, answer) and `describe(scene)` (a caption).
Keeping the scene separate from its rendering is what lets one scene answer many questions
and lets the `captions` generator pre-train a base model on the same visual world without
ever asking the stream's questions.
"""

from __future__ import annotations

from strcvit_bench.data.sources.builtin import captions, charts, ocr, remote_sensing, scenes

FAMILY_MODULES = {
    "scenes": scenes,
    "ocr": ocr,
    "charts": charts,
    "remote_sensing": remote_sensing,
    "captions": captions,
}
GENERATORS = tuple(FAMILY_MODULES)
