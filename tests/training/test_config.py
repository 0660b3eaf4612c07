"""Trainer config: kohya names, defaults, unknown keys as errors with a suggestion."""

import logging
from pathlib import Path

import pytest
from instruct_identity.core.errors import InputError
from instruct_identity.training import config as C

EXAMPLES = Path(__file__).resolve().parents[2] / "training" / "examples"


def test_defaults_follow_the_paper_and_kohya():
    cfg = C.from_dict({"dataset_config": "d.toml"})
    assert (cfg.mode, cfg.preset, cfg.loss) == ("identity", "B", "masked")
    assert cfg.learning_rate == 1e-4 and cfg.optimizer_type == "AdamW"
    assert cfg.network_alpha == cfg.network_dim  # not kohya's 1
    assert cfg.guidance_scale == 1.0 and cfg.timestep_sampling == "uniform"
    grid = C.from_dict({"dataset_config": "d.toml", "mode": "grid"})
    assert (grid.preset, grid.loss, grid.network_dim, grid.network_alpha) == ("A", "full", 16, 16.0)


def test_unknown_key_is_an_error_with_a_suggestion():
    with pytest.raises(InputError) as e:
        C.from_dict({"dataset_config": "d.toml", "learning_rte": 1e-4})
    assert "learning_rte" in str(e.value) and 'Did you mean "learning_rate"' in str(e.value)
    with pytest.raises(InputError, match="network_dim"):
        C.from_dict({"dataset_config": "d.toml", "network_dims": 8})


def test_kohya_keys_not_implemented_are_refused_or_ignored(caplog):
    with pytest.raises(InputError, match="blocks_to_swap.*fp8_base"):
        C.from_dict({"dataset_config": "d.toml", "blocks_to_swap": 10})
    with caplog.at_level(logging.WARNING):
        C.from_dict({"dataset_config": "d.toml", "max_data_loader_n_workers": 4, "sdpa": True})
    assert "max_data_loader_n_workers is ignored" in caplog.text


def test_bad_values_name_the_key():
    with pytest.raises(InputError, match='timestep_sampling.*Did you mean "shift"'):
        C.from_dict({"dataset_config": "d.toml", "timestep_sampling": "shfit"})
    with pytest.raises(InputError, match="learning_rate.*str"):
        C.from_dict({"dataset_config": "d.toml", "learning_rate": "fast"})
    with pytest.raises(InputError, match="loss"):
        C.from_dict({"dataset_config": "d.toml", "mode": "grid", "loss": "masked"})
    with pytest.raises(InputError, match="fp8_base"):
        C.from_dict({"dataset_config": "d.toml", "fp8_base": True, "mixed_precision": "no"})
    with pytest.raises(InputError, match="dataset_config"):
        C.from_dict({})


def test_sections_are_groupings_and_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "c.toml"
    p.write_text('[model]\npretrained_model_name_or_path = "flux1-dev.safetensors"\n'
                 '[data]\ndataset_config = "data/pairs.jsonl"\n[run]\noutput_dir = "out"\nmax_train_steps = 7\n'
                 '[opt]\noptimizer_args = ["weight_decay=0.05"]\n')
    cfg = C.load_config(p, {"max_train_steps": 9})
    assert cfg.max_train_steps == 9
    assert cfg.dataset_config == str((tmp_path / "sub" / "data" / "pairs.jsonl").resolve())
    assert cfg.output_dir == str((tmp_path / "sub" / "out").resolve())
    assert cfg.pretrained_model_name_or_path == "flux1-dev.safetensors"  # looked up in ComfyUI's folders later
    assert cfg.optimizer_kwargs() == {"weight_decay": 0.05}
    assert C.parse_override("network_dim=32") == ("network_dim", 32)


@pytest.mark.parametrize("name", ["identity.toml", "grid.toml"])
def test_example_configs_load(name):
    cfg = C.load_config(EXAMPLES / name)
    assert cfg.dataset_config.endswith(".toml")


def test_lr_schedules():
    from instruct_identity.training.schedule import lr_factor, warmup_steps

    f = lambda s, name, **kw: lr_factor(s, scheduler=name, total=100, **kw)
    assert [f(s, "constant_with_warmup", warmup=4) for s in (0, 2, 4, 99)] == [0.0, 0.5, 1.0, 1.0]
    assert f(0, "linear") == 1.0 and f(50, "linear") == 0.5 and f(100, "linear") == 0.0
    assert f(0, "cosine") == 1.0 and f(50, "cosine") == pytest.approx(0.5) and f(100, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert f(50, "cosine_with_restarts", cycles=2) == pytest.approx(1.0)
    assert f(50, "polynomial", power=2.0) == pytest.approx(0.25)
    assert warmup_steps(0.1, 200) == 20 and warmup_steps(30, 200) == 30
