"""The typed config machinery every command uses: files, overrides, errors that name the key."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

import pytest

from specaware.config import ConfigError, build, from_dict, save_yaml, to_dict


@dataclasses.dataclass
class Inner:
    crop: int = 64
    flip: bool = True


@dataclasses.dataclass
class Section:
    steps: int = 10
    lr: float = 1e-3
    mode: Literal["a", "b"] = "a"
    names: list[str] = dataclasses.field(default_factory=list)
    views: Inner | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Root:
    train: Section = dataclasses.field(default_factory=Section)


def _yaml(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_files_apply_in_order_then_overrides(tmp_path):
    a = _yaml(tmp_path, "train: {steps: 5, lr: 0.1}", "a.yaml")
    b = _yaml(tmp_path, "train: {steps: 7}", "b.yaml")
    cfg = build(Root, [a, b], ["train.lr=0.5", "train.names=x,y"])
    assert (cfg.train.steps, cfg.train.lr, cfg.train.names) == (7, 0.5, ["x", "y"])


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.stepz'.*'train\.steps'"):
        build(Root, overrides=["train.stepz=3"])
    path = _yaml(tmp_path, "trian: {steps: 5}")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'trian'"):
        build(Root, [path])


@pytest.mark.parametrize("override, message", [
    ("train.steps=many", r"'train\.steps': expected an integer"),
    ("train.lr=fast", r"'train\.lr': expected a number"),
    ("train.mode=c", r"'train\.mode': 'c' is not one of \['a', 'b'\]"),
])
def test_wrong_types_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        build(Root, overrides=[override])


def test_optional_section_passes_the_inner_error_through():
    cfg = build(Root, overrides=["train.views.crop=32"])
    assert cfg.train.views == Inner(crop=32, flip=True)
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.views\.crops'"):
        build(Root, overrides=["train.views.crops=32"])
    assert build(Root, overrides=["train.views=null"]).train.views is None


def test_free_form_mappings_merge_key_by_key(tmp_path):
    path = _yaml(tmp_path, "train: {overrides: {depth: 4, moe: {experts: 8, slots: 2}}}")
    cfg = build(Root, [path], ["train.overrides.moe.slots=4", "train.overrides.width=32"])
    assert cfg.train.overrides == {"depth": 4, "width": 32, "moe": {"experts": 8, "slots": 4}}


def test_round_trip_through_yaml(tmp_path):
    cfg = build(Root, overrides=["train.views.crop=16", "train.overrides.depth=2"])
    save_yaml(cfg, tmp_path / "resolved.yaml")
    again = build(Root, [tmp_path / "resolved.yaml"])
    assert again == cfg and from_dict(Root, to_dict(cfg)) == cfg
