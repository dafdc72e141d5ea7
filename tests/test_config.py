import pytest

from imclass.config import RunConfig, from_dict, load_yaml, override, resolve, save_yaml, to_dict
from imclass.errors import ConfigError


def test_flat_and_dotted_keys_override_the_same_field():
    assert override(RunConfig(), {"lr": 0.05}).train.lr == 0.05
    assert override(RunConfig(), {"train.lr": "0.05"}).train.lr == 0.05
    assert override(RunConfig(), {"widths": "16,32", "depths": "2,1"}).model.widths == (16, 32)


def test_unknown_key_names_the_nearest_valid_one():
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        override(RunConfig(), {"epoch": 3})
    with pytest.raises(ConfigError, match="unknown config key 'model.lr'"):
        override(RunConfig(), {"model.lr": 3})


@pytest.mark.parametrize("key,value,allowed", [
    ("lr", -0.1, r"\(0, 10\]"), ("val_fraction", -0.1, r"\[0, 1\)"), ("val_fraction", 1.0, r"\[0, 1\)"),
    ("epochs", 0, r"\[1, 10000\]"), ("dropout", 1, r"\[0, 1\)"), ("optimizer", "adamm", "adam"),
])
def test_out_of_range_values_are_refused_with_the_allowed_range(key, value, allowed):
    with pytest.raises(ConfigError, match=allowed):
        override(RunConfig(), {key: value})


def test_wrong_types_are_refused():
    with pytest.raises(ConfigError, match="'epochs' must be int"):
        override(RunConfig(), {"epochs": 2.5})
    with pytest.raises(ConfigError, match="'lr' must be float"):
        override(RunConfig(), {"lr": "fast"})


def test_widths_and_depths_must_have_the_same_stage_count():
    with pytest.raises(ConfigError, match="same number"):
        override(RunConfig(), {"widths": "8,16", "depths": "1,1,1"})


def test_yaml_round_trip_and_errors_name_the_file(tmp_path):
    cfg = resolve(override(RunConfig(), {"lr": 0.01, "widths": [8, 16], "depths": [2, 2]}))
    path = tmp_path / "run.yaml"
    save_yaml(cfg, path)
    assert load_yaml(path) == cfg
    assert from_dict(to_dict(cfg)) == cfg
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.learning_rate'"):
        load_yaml(bad)


def test_resolve_fills_unset_augmentation_from_the_preset_and_keeps_overrides():
    cfg = resolve(override(RunConfig(), {"augment": "strong", "rotate_degrees": 5}))
    assert cfg.augment.rotate_degrees == 5
    assert cfg.augment.blur_p > 0 and cfg.augment.vflip_p == 0
    assert all(v is not None for v in to_dict(cfg)["augment"].values())
    none = resolve(override(RunConfig(), {"augment": "none"}))
    assert none.augment.hflip_p == 0 and none.augment.shift_p == 0


def test_configuration_reference_is_up_to_date():
    from pathlib import Path

    from imclass.config import reference_markdown
    doc = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert doc.read_text() == reference_markdown(), \
        "regenerate it: .venv/bin/python -m imclass.config > docs/configuration.md"
