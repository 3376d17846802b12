"""The one registry type: decorator and lazy entries, collisions, entry points."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from strcvit_bench.errors import StrcvitError
from strcvit_bench.registry import Registry


def sample_metric(prediction, references):  # a module-level object a lazy entry can name
    return 1.0


def test_decorator_lazy_entries_and_lookup():
    reg: Registry = Registry("thing", hint="see the docs")

    @reg.register("eager")
    def eager():
        return "eager"

    reg.register("lazy", f"{__name__}:sample_metric")
    assert reg.names() == ["eager", "lazy"] and "lazy" in reg
    assert reg.get("eager") is eager
    assert reg.get("lazy") is sample_metric  # imported on first use
    with pytest.raises(StrcvitError, match=r"unknown thing 'nope'; available: eager, lazy \(see the docs\)"):
        reg.get("nope")
    reg.register("broken", "no_such_module_here:thing")
    with pytest.raises(StrcvitError, match="names no_such_module_here:thing, which does not import"):
        reg.get("broken")
    with pytest.raises(ValueError, match="module:object"):
        reg.register("bad", "not-a-target")


def test_collisions_are_errors_but_the_same_object_is_one_entry():
    reg: Registry = Registry("thing")
    reg.register("m", f"{__name__}:sample_metric")
    reg.register("m", sample_metric)  # the object its lazy entry names: the same entry
    assert reg.get("m") is sample_metric
    with pytest.raises(StrcvitError, match="'m' .*already registered as .*sample_metric"):
        reg.register("m", lambda p, r: 0.0)
    reg.unregister("m")
    reg.register("m", lambda p, r: 0.0)  # free again


def test_entry_points_add_entries_and_cannot_shadow_builtins(monkeypatch):
    import importlib.metadata

    def fake(group):
        assert group == "strcvit_bench.things"
        return [SimpleNamespace(name="plugin", value=f"{__name__}:sample_metric", dist=SimpleNamespace(name="my-pkg"))]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    reg: Registry = Registry("thing", entry_point_group="strcvit_bench.things")
    assert reg.names() == ["plugin"] and reg.get("plugin") is sample_metric
    shadowing: Registry = Registry("thing", entry_point_group="strcvit_bench.things")
    shadowing.register("plugin", "os.path:join")
    with pytest.raises(StrcvitError, match=r"'plugin' \(from entry point of my-pkg\) is already registered"):
        shadowing.names()


def test_the_project_registries_list_without_importing():
    from strcvit_bench.data.sources import SOURCES
    from strcvit_bench.evaluation.scoring import METRICS
    from strcvit_bench.methods.registry import METHODS
    from strcvit_bench.models.families import FAMILIES

    assert METHODS.names()[:3] == ["lora", "replay", "ewc"] and "joint" in METHODS
    assert SOURCES.names() == ["builtin", "hf", "local"]
    assert {"vqa_accuracy", "cider", "bbox_iou", "authors.grounding"} <= set(METRICS.names())
    assert {"llava", "qwen2_vl", "qwen2_5_vl", "idefics3", "internvl", "gemma3"} == set(FAMILIES.names())
    for name, cls in METHODS.items():
        assert cls.name == name  # every lazy entry names the class of that name
