"""The WMT recipes (issue 39): they compose to the papers' settings, and the base recipe trains and
decodes on a tiny slice on a CPU (the model is the real 6+6 d512 one, the data a few hundred pairs)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from hydra import compose, initialize_config_dir

from nmt.config import register_configs, to_config
from nmt.models import build_model

from conftest import ROOT


def _compose(recipe: str):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=[f"experiment={recipe}"]))


@pytest.mark.parametrize("recipe, d_model, heads, ffn, dropout, lr, update_freq, millions", [
    ("wmt_transformer_base", 512, 8, 2048, 0.1, 7e-4, 1, (60, 66)),     # Vaswani et al. 2017: 65M
    ("wmt_transformer_big", 1024, 16, 4096, 0.3, 1e-3, 16, (205, 215)),  # 213M
])
def test_recipes_compose_to_the_papers_settings(recipe, d_model, heads, ffn, dropout, lr, update_freq, millions):
    cfg = _compose(recipe)
    m = cfg.model
    assert (m.d_model, m.num_heads, m.ffn_dim, m.encoder_layers, m.decoder_layers) == (d_model, heads, ffn, 6, 6)
    assert m.dropout == dropout and m.share_embeddings and m.tie_output and not m.pre_norm
    assert cfg.optim.lr == lr and list(cfg.optim.betas) == [0.9, 0.98] and cfg.optim.warmup_steps == 4000
    assert cfg.train.label_smoothing == 0.1 and cfg.train.update_freq == update_freq
    assert cfg.train.max_tokens == 25000 and cfg.train.precision.value == "bf16"
    assert (cfg.search.beam_size, cfg.search.length_penalty) == (4, 0.6)
    assert cfg.data.tokenizer.vocab_size == 32000 and cfg.data.tokenizer.joint
    with torch.device("meta"):
        model = build_model(cfg.model, 32000, 32000)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions[0] <= params <= millions[1], params


@pytest.mark.slow
def test_the_base_recipe_trains_and_decodes_on_a_tiny_slice(tmp_path, multi30k_dir):
    data = tmp_path / "wmt14"
    data.mkdir()
    for split, source, n in (("train", "train", 300), ("newstest2013", "valid", 8), ("newstest2014", "test2016", 8)):
        for lang in ("en", "de"):
            lines = (multi30k_dir / "multi30k" / f"{source}.{lang}").read_text(encoding="utf-8").splitlines()[:n]
            (data / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cmd = [str(ROOT / ".venv" / "bin" / "nmt-train") if (ROOT / ".venv" / "bin" / "nmt-train").exists() else "nmt-train",
           "experiment=wmt_transformer_base", f"data.dir={data}", f"hydra.run.dir={tmp_path / 'run'}",
           f"data.tokenizer.cache_dir={tmp_path / 'cache'}", "train.device=cpu", "train.precision=fp32",
           "train.max_tokens=1500", "train.max_steps=2", "optim.warmup_steps=1", "train.valid_every_steps=2",
           "train.average_last=0", "train.num_threads=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["steps"] == 2 and "newstest2014" in json.dumps(results)
