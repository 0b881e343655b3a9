"""A tiny real corpus is overfit, and the same seed reproduces the run bit for bit (R27)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nmt.config import register_configs, to_config

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def _config(tmp: Path, data_dir: Path, extra=()):
    from hydra import compose, initialize_config_dir

    register_configs()
    overrides = ["debug=tiny", "data.max_train_pairs=48", "data.valid_split=train", "data.max_valid_pairs=48",
                 "data.tokenizer.vocab_size=400", f"data.tokenizer.cache_dir={tmp / 'spm'}", "train.eval_test=false",
                 "train.max_epochs=200", "train.valid_every_epochs=100", "train.progress_bar=false",
                 "model.dropout=0.0", "train.label_smoothing=0.0", "optim.lr=5e-3", "optim.warmup_steps=30",
                 "train.patience=0", "search.beam_size=1", "search.length_penalty=0.0", *extra]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = to_config(compose(config_name="config", overrides=overrides))
    cfg.data.dir = str(data_dir / "multi30k")
    return cfg


def _train(cfg, run_dir):
    from nmt.train.data import prepare_data
    from nmt.train.trainer import Trainer

    data = prepare_data(cfg.data, seed=cfg.train.seed, with_test=False)
    return Trainer(cfg, data, run_dir).train()


@pytest.mark.slow
def test_tiny_real_corpus_is_overfit_and_reproduced(tmp_path, multi30k_dir):
    cfg = _config(tmp_path, multi30k_dir)
    first = _train(cfg, tmp_path / "a")
    assert first["best_valid_bleu"] > 90, first["history"]
    second = _train(cfg, tmp_path / "b")
    assert [h["loss"] for h in second["history"]] == [h["loss"] for h in first["history"]]
    index = json.loads((tmp_path / "a" / "checkpoints" / "checkpoints.json").read_text())
    name = index["latest"]
    a = (tmp_path / "a" / "checkpoints" / name / "model.safetensors").read_bytes()
    b = (tmp_path / "b" / "checkpoints" / name / "model.safetensors").read_bytes()
    assert a == b, "same seed, same data: the weights must be identical"
