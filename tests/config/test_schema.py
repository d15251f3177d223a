"""One config schema: defaults in one file, unknown keys and wrong kinds rejected with the key and the file."""
from pathlib import Path

import pytest
import yaml

from lesiondet.config import DEFAULTS_FILE, check_section, defaults, load_section
from lesiondet.detection.preset import load_config
from lesiondet.errors import LesiondetError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("section", ["model", "tiling", "train", "augment", "oct", "grading"])
def test_an_unknown_key_is_refused_in_every_section(section, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({section: {"no_such_key": 1}}))
    load = (lambda: load_config(f)) if section in ("model", "tiling", "train", "augment") else \
        (lambda: load_section(section, f, "config", "fix"))
    with pytest.raises(LesiondetError) as e:
        load()
    msg = str(e.value)
    assert "no_such_key" in msg and str(f) in msg and "\n" not in msg


@pytest.mark.parametrize("section,key,value", [("train", "lr", "fast"), ("train", "epochs", 2.5),
                                               ("augment", "hflip", "yes"), ("tiling", "tta", 1),
                                               ("model", "anchor_sizes", 8)])
def test_a_value_of_the_wrong_kind_names_the_key(section, key, value):
    with pytest.raises(LesiondetError, match=f"{section}.{key}"):
        check_section(section, {key: value}, "x.yaml")


def test_a_labels_key_in_a_model_config_is_refused_with_the_flag_to_use(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("labels: configs/datasets/codras.yaml\n")
    with pytest.raises(LesiondetError, match="--labels"):
        load_config(f)


def test_auto_settings_take_a_number_too():
    assert check_section("tiling", {"zoom": 1.6, "tiles_per_image": 4, "slice": False})["zoom"] == 1.6


def test_presets_list_only_what_differs_from_the_defaults():
    for preset in (ROOT / "configs" / "models").glob("*.yaml"):
        user = yaml.safe_load(preset.read_text()) or {}
        for section, values in user.items():
            for key, value in (values or {}).items():
                assert value != defaults(section)[key], f"{preset.name}: {section}.{key} repeats the default"
        if set(user) <= {"model", "tiling", "train", "augment"}:
            load_config(preset)  # a detector preset
        else:
            for section in user:
                load_section(section, preset, "preset", "fix it")


def test_no_config_gives_exactly_the_defaults_file():
    raw = yaml.safe_load(DEFAULTS_FILE.read_text())
    assert load_config(None) == {s: raw[s] for s in ("model", "tiling", "train", "augment")}
    assert not (ROOT / "configs" / "grading.yaml").exists()  # one copy of the grading thresholds
