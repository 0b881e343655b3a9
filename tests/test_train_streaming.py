"""Training on a streamed corpus (data.streaming=true; Hugging Face JSON Lines, or plain-text files):
the trainer reads batches
from the stream, saves its position in checkpoints, and resumes bitwise where it stopped."""
from __future__ import annotations

import json

import pytest
import torch

from nmt.config import AttentionPlotConfig, Config, DataConfig, HFDataFiles, ModelConfig, OptimConfig, SearchConfig, \
    TokenizerConfig, TrainConfig
from nmt.train.data import prepare_data
from nmt.train.trainer import Trainer, TrainingInterrupted
from test_resume import _record


@pytest.fixture(scope="module")
def jsonl_files(tmp_path_factory):
    """300 training pairs of real Multi30k in three JSON Lines shards, 20 dev pairs."""
    from conftest import require_multi30k

    data = require_multi30k()
    tmp = tmp_path_factory.mktemp("stream")
    m30k = data / "multi30k"

    def pairs(split, n):
        en = (m30k / f"{split}.en").read_text(encoding="utf-8").splitlines()[:n]
        de = (m30k / f"{split}.de").read_text(encoding="utf-8").splitlines()[:n]
        return [json.dumps({"translation": {"en": e, "de": g}}, ensure_ascii=False) + "\n" for e, g in zip(en, de)]

    train = pairs("train", 300)
    for k in range(3):
        (tmp / f"train-{k}.jsonl").write_text("".join(train[k * 100:(k + 1) * 100]), encoding="utf-8")
    (tmp / "valid.jsonl").write_text("".join(pairs("valid", 20)), encoding="utf-8")
    for split, n in (("train", 300), ("valid", 20)):  # the same pairs as plain-text files
        for lang in ("en", "de"):
            lines = (m30k / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()[:n]
            (tmp / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp


def _trainer(tmp, run_dir, kind="hub", **train) -> Trainer:
    where = dict(hf_name="json", hf_data_files=HFDataFiles(train=str(tmp / "train-*.jsonl"),
                                                           validation=str(tmp / "valid.jsonl"))) \
        if kind == "hub" else dict(dir=str(tmp), download=False)
    data_cfg = DataConfig(**where, streaming=True, shuffle_buffer=64, stream_spm_sentences=300,
                          tokenizer=TokenizerConfig(vocab_size=400, cache_dir=str(tmp / "spm")))
    train = {"max_tokens": 400, "update_freq": 2, "max_epochs": 3, "log_every_steps": 1, "eval_test": False,
             "progress_bar": False, "patience": 0, **train}
    cfg = Config(data=data_cfg, model=ModelConfig(d_model=32, num_heads=2, ffn_dim=64, encoder_layers=1,
                                                  decoder_layers=1, dropout=0.1),
                 optim=OptimConfig(lr=3e-3, warmup_steps=5),
                 train=TrainConfig(**train, attention=AttentionPlotConfig(sentences=0, stats_sentences=0)),
                 search=SearchConfig(beam_size=1, max_len_b=5))
    data = prepare_data(cfg.data, seed=cfg.train.seed, with_test=False, max_tokens=cfg.train.max_tokens)
    assert data.train is None and data.train_stream is not None
    return Trainer(cfg, data, run_dir)


@pytest.mark.parametrize("kind", ["hub", "text"])
def test_streamed_training_resumes_bitwise(jsonl_files, tmp_path, kind):
    straight = _trainer(jsonl_files, tmp_path / "straight", kind, max_steps=24)
    expected = _record(straight)
    results = straight.train()
    assert results["steps"] == 24 and results["epochs_completed"] >= 1  # crossed an epoch boundary
    assert expected[-1] < expected[0]

    first = _trainer(jsonl_files, tmp_path / "resumed", kind, max_steps=24)
    got = _record(first, stop_at=11)
    with pytest.raises(TrainingInterrupted):
        first.train()
    second = _trainer(jsonl_files, tmp_path / "resumed", kind, max_steps=24)
    assert second.progress.step == 11 and second.sampler.state_dict()["batches_consumed"] > 0
    rest = _record(second)
    second.train()
    got += rest
    assert got == expected
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[name]), name
