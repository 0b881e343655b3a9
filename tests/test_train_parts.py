"""Loss, learning-rate schedules, checkpoints and averaging."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from nmt.config import Config, ModelConfig
from nmt.data.batch import PAD_ID
from nmt.models import build_model
from nmt.train import checkpoint as ckpt_io
from nmt.train.average import average_checkpoints
from nmt.models.loss import label_smoothed_nll
from nmt.train.optim import build_optimizer, lr_lambda


def test_label_smoothed_loss_matches_definition_and_ignores_pad():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 11)
    target = torch.tensor([[4, 5, PAD_ID], [6, PAD_ID, PAD_ID]])
    loss, nll = label_smoothed_nll(logits, target, 0.1)
    keep = target != PAD_ID
    lp = logits.log_softmax(-1)[keep]
    expected_nll = F.nll_loss(lp, target[keep], reduction="sum")
    expected = 0.9 * expected_nll + 0.1 * (-lp.mean(-1)).sum()
    torch.testing.assert_close(nll, expected_nll)
    torch.testing.assert_close(loss, expected)
    plain, plain_nll = label_smoothed_nll(logits, target, 0.0)
    torch.testing.assert_close(plain, plain_nll)


def test_inverse_sqrt_schedule():
    f = lr_lambda("inverse_sqrt", lr=1e-3, warmup_steps=1000, warmup_init_lr=1e-7, min_lr=0.0)
    assert f(0) * 1e-3 == pytest.approx(1e-7)
    assert f(500) == pytest.approx((1e-7 + (1e-3 - 1e-7) * 0.5) / 1e-3)
    assert f(1000) == pytest.approx(1.0)
    assert f(4000) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="scheduler"):
        lr_lambda("cosine-ish", 1e-3, 10, 0.0, 0.0)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decaying_schedules_anneal_to_min_lr_at_max_steps(kind):
    f = lr_lambda(kind, lr=1e-3, warmup_steps=100, warmup_init_lr=0.0, min_lr=1e-5, total_steps=1100)
    assert f(50) == pytest.approx(0.5)
    assert f(100) == pytest.approx(1.0)
    assert f(600) == pytest.approx(0.01 + 0.99 * 0.5)  # half way: both shapes give the midpoint
    assert f(1100) == pytest.approx(0.01) and f(5000) == pytest.approx(0.01)
    quarter = f(350)
    assert quarter == pytest.approx(0.01 + 0.99 * (0.75 if kind == "linear" else 0.5 * (1 + 2 ** -0.5)))
    values = [f(s) for s in range(100, 1200)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="max_steps"):
        lr_lambda(kind, 1e-3, 100, 0.0, 0.0, total_steps=0)


def test_noam_schedule_peaks_at_warmup():
    f = lr_lambda("noam", lr=1.0, warmup_steps=100, warmup_init_lr=0.0, min_lr=0.0, d_model=512)
    values = [f(s) for s in range(1, 400)]
    assert max(range(len(values)), key=values.__getitem__) + 1 == 100
    assert f(100) == pytest.approx(512 ** -0.5 * 100 ** -0.5)


def test_weight_decay_skips_biases_and_norms():
    model = build_model(ModelConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1), 30, 30)
    opt = build_optimizer(model, "adam", 1e-3, (0.9, 0.98), 1e-8, 0.01)
    decay, no_decay = opt.param_groups
    assert all(p.dim() > 1 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0


class _Tok:
    """Minimal stand-in for the sentencepiece tokenizer (bytes + sizes)."""

    src_vocab_size = tgt_vocab_size = 30

    def to_bytes(self):
        return {"spm.model": b"not-a-real-model"}

    def sha256(self):
        return {"spm.model": "0" * 64}


class IntTok(_Tok):
    """Whitespace-separated integers <-> ids (offset 4 past the specials): enough for the trainer."""

    def encode_src(self, texts):
        return [[4 + int(w) for w in t.split()] for t in texts]

    encode_tgt = encode_src

    def decode_tgt(self, ids):
        return [" ".join(str(i - 4) for i in seq) for seq in ids]

    def src_pieces(self, ids):
        return [f"\u2581{i}" for i in ids]

    tgt_pieces = src_pieces


def _save(tmp_path, name="step-0000001", step=1):
    cfg = Config(model=ModelConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1))
    model = build_model(cfg.model, 30, 30)
    path = ckpt_io.save_checkpoint(tmp_path, name, model, cfg, _Tok(), {"step": step}, {"progress": {"step": step}})
    return model, cfg, path


def test_checkpoint_is_complete_and_state_loads_weights_only(tmp_path):
    """R1, R3, R12: built under a temp name, complete marker, format version and tokenizer hash."""
    model, cfg, path = _save(tmp_path)
    assert (path / ckpt_io.MARKER).exists() and not list(tmp_path.glob(".tmp-*"))
    assert ckpt_io.load_trainer_state(path)["progress"]["step"] == 1
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == ckpt_io.FORMAT_VERSION and meta["tokenizer_sha256"]


def test_tied_weights_survive_safetensors_round_trip(tmp_path):
    """R11: tied embeddings survive save/load and stay tied."""
    from safetensors.torch import load_model

    model, cfg, path = _save(tmp_path)
    fresh = build_model(cfg.model, 30, 30)
    load_model(fresh, str(path / "model.safetensors"))
    assert fresh.encoder.embed is fresh.decoder.embed
    torch.testing.assert_close(fresh.decoder.embed.weight, model.decoder.embed.weight)
    with torch.no_grad():
        fresh.encoder.embed.weight[5, 0] += 1.0
    assert fresh.decoder.embed.weight[5, 0] == fresh.encoder.embed.weight[5, 0]


def test_resolve_refuses_incomplete_and_finds_latest(tmp_path):
    """R3, R31: a checkpoint without its completeness marker is refused; listing skips stale temp
    dirs and deletes nothing (a reader may run beside a saving trainer); the lock holder's
    cleanup removes them, and only inside a ``checkpoints/`` folder."""
    root = tmp_path / "checkpoints"
    _, _, first = _save(root, "step-0000001", 1)
    _, _, second = _save(root, "step-0000002", 2)
    (second / ckpt_io.MARKER).unlink()
    with pytest.raises(ckpt_io.CheckpointError, match="incomplete"):
        ckpt_io.resolve_checkpoint(second)
    assert ckpt_io.resolve_checkpoint(root) == first  # no index: newest complete one
    (root / ".tmp-step-0000003.123.abcd").mkdir()
    assert [p.name for p in ckpt_io.complete_checkpoints(root)] == ["step-0000001"]
    assert (root / ".tmp-step-0000003.123.abcd").exists()  # readers never delete (R31)
    (tmp_path / ".tmp-mine").mkdir()  # a user's file beside the checkpoints folder
    assert ckpt_io.clean_stale_temps(tmp_path) == 0 and (tmp_path / ".tmp-mine").exists()
    assert ckpt_io.clean_stale_temps(root) == 1 and not (root / ".tmp-step-0000003.123.abcd").exists()


def test_load_model_refuses_newer_format_and_corrupt_files(tmp_path):
    """R12: a self-contained model directory; newer formats and corrupt files are refused clearly."""
    from nmt.config import TokenizerConfig
    from nmt.data.tokenizer import train_tokenizer

    text = [f"sentence number {i} with some words" for i in range(50)]
    tok = train_tokenizer(text, text, TokenizerConfig(vocab_size=300), tmp_path / "spm")
    cfg = Config(model=ModelConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1))
    model = build_model(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size)
    path = ckpt_io.save_checkpoint(tmp_path, "step-0000001", model, cfg, tok, {"step": 1})
    loaded = ckpt_io.load_model(path)
    torch.testing.assert_close(loaded.model.state_dict(), model.state_dict())
    assert loaded.tokenizer.decode_tgt(loaded.tokenizer.encode_tgt(text[:2])) == text[:2]
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps(dict(meta, format_version=99)))
    with pytest.raises(ckpt_io.CheckpointError, match="newer"):
        ckpt_io.load_model(path)
    (path / "meta.json").write_text(json.dumps(meta))
    weights = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # truncated
    with pytest.raises(ckpt_io.CheckpointError, match="model.safetensors"):
        ckpt_io.load_model(path)
    (path / "model.safetensors").write_bytes(weights)
    (path / "spm.model").write_bytes(b"garbage")
    with pytest.raises(ckpt_io.CheckpointError, match="sentencepiece"):
        ckpt_io.load_model(path)


def test_prune_keeps_best_and_latest(tmp_path):
    """R5: keep-last-N is computed from disk and never deletes the protected (best) checkpoint."""
    for step in range(1, 6):
        _save(tmp_path, f"step-{step:07d}", step)
    ckpt_io.prune_checkpoints(tmp_path, keep_last=2, protect={"step-0000001"})
    assert sorted(p.name for p in ckpt_io.complete_checkpoints(tmp_path)) == [
        "step-0000001", "step-0000004", "step-0000005"]


def test_a_kill_while_removing_a_checkpoint_leaves_no_half_deleted_one(tmp_path, monkeypatch):
    """R3, R5: pruning or overwriting renames the directory out of sight before deleting it, so
    a kill in the middle of the deletion (here: rmtree dies after one file) leaves only a temp
    directory, which the listing skips and the lock holder's cleanup removes; a marked directory
    whose meta.json is gone (a hand edit) is left out with a warning instead of failing every listing."""
    import shutil
    from pathlib import Path

    import nmt.train.checkpoint as module

    for step in range(1, 4):
        _save(tmp_path, f"step-{step:07d}", step)
    real_rmtree = shutil.rmtree

    def killed(path, *args, **kwargs):
        (Path(path) / "meta.json").unlink()
        raise KeyboardInterrupt("killed while deleting")

    monkeypatch.setattr(module.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        module.prune_checkpoints(tmp_path, keep_last=2, protect=set())
    with pytest.raises(KeyboardInterrupt):  # overwriting a checkpoint of the same name
        _save(tmp_path, "step-0000003", 3)
    monkeypatch.setattr(module.shutil, "rmtree", real_rmtree)
    visible = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".tmp-")]
    assert all((p / module.MARKER).exists() and (p / "meta.json").exists() for p in visible)
    assert [p.name for p in module.complete_checkpoints(tmp_path)] == ["step-0000002"]
    assert list(tmp_path.glob(".tmp-*"))  # skipped by the listing, deleted by nobody but the lock holder
    (tmp_path / "step-0000002" / "meta.json").unlink()
    assert module.complete_checkpoints(tmp_path) == []


def test_index_is_replaced_atomically_and_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """R4, R18: checkpoints.json is replaced through a temp file (never unlinked first); a save
    that fails half way raises, leaves no half-written checkpoint and keeps the previous one."""
    import os

    import nmt.train.checkpoint as module

    _, _, first = _save(tmp_path, "step-0000001", 1)
    module.write_index(tmp_path, {"latest": "step-0000001"})
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((str(a), str(b))), real_replace(a, b))[1])
    module.write_index(tmp_path, {"latest": "step-0000001", "best": "step-0000001"})
    assert replaced and replaced[-1][1] == str(tmp_path / module.INDEX) and replaced[-1][0] != replaced[-1][1]
    assert module.read_index(tmp_path)["best"] == "step-0000001"

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "_write_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _save(tmp_path, "step-0000002", 2)
    assert [p.name for p in module.complete_checkpoints(tmp_path)] == ["step-0000001"]
    assert not list(tmp_path.glob(".tmp-*")) and not (tmp_path / "step-0000002").exists()
    assert module.load_trainer_state(first)["progress"]["step"] == 1


class _Payload:
    """Unpickling this would call ``open(path, "w")``: a stand-in for arbitrary code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    """R10: a trainer_state.pt carrying a code payload is refused and the payload never runs."""
    _, _, path = _save(tmp_path / "ckpt")
    marker = tmp_path / "payload-ran"
    torch.save({"progress": {"step": 1}, "evil": _Payload(marker)}, path / "trainer_state.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="cannot be loaded safely"):
        ckpt_io.load_trainer_state(path)
    assert not marker.exists()


def test_every_torch_load_is_explicitly_weights_only():
    """R10: no ``torch.load`` in the package without ``weights_only=True``."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "nmt"
    calls = [(f, m.group(0)) for f in package.rglob("*.py")
             for m in re.finditer(r"torch\.load\([^)]*\)", f.read_text())]
    assert calls, "expected at least the trainer-state loader"
    assert all("weights_only=True" in call for _, call in calls), calls


def test_average_checkpoints_is_the_mean(tmp_path):
    torch.manual_seed(0)
    m1, _, p1 = _save(tmp_path, "step-0000001", 1)
    torch.manual_seed(1)
    m2, _, p2 = _save(tmp_path, "step-0000002", 2)
    avg = average_checkpoints([p1, p2])
    w = "decoder.layers.0.ffn.fc1.weight"
    torch.testing.assert_close(avg[w], (m1.state_dict()[w] + m2.state_dict()[w]) / 2)
    assert math.isclose(float(avg[w].sum()), float((m1.state_dict()[w] + m2.state_dict()[w]).sum() / 2), rel_tol=1e-5)


def _trainer(tmp_path, **train_overrides):
    from nmt.config import TrainConfig
    from nmt.data.text import ParallelText
    from nmt.data.dataset import TokenizedDataset
    from nmt.train.data import PreparedData
    from nmt.train.trainer import Trainer

    cfg = Config(model=ModelConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1,
                                   dropout=0.0, attention_dropout=0.0, activation_dropout=0.0),
                 train=TrainConfig(**train_overrides))
    src = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    tgt = [[7, 6, 5], [9, 8], [13, 12, 11, 10], [14]]
    valid = ParallelText(["1 2"], ["2 1"], [1])
    return Trainer(cfg, PreparedData(IntTok(), TokenizedDataset(src, tgt), valid, None), tmp_path)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    from nmt.data.dataset import make_batch

    torch.manual_seed(0)
    acc = _trainer(tmp_path / "a", update_freq=2)
    torch.manual_seed(0)
    big = _trainer(tmp_path / "b")
    ds = acc.data.train
    acc_stats = acc.step([make_batch(ds, [0, 1]), make_batch(ds, [2, 3])])
    big_stats = big.step([make_batch(ds, [0, 1, 2, 3])])
    assert acc_stats.tokens == big_stats.tokens == 4 + 3 + 5 + 2
    assert acc_stats.loss == pytest.approx(big_stats.loss, rel=1e-5)
    for (name, p), q in zip(acc.model.named_parameters(), big.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def _event_tags(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc.Tags()


def test_validation_logs_alignment_figures_and_attention_statistics(tmp_path):
    """With train.attention.images=true the Images tab gets the matplotlib figures too (the
    Attention tab's records are always written; tests/test_dashboard.py)."""
    from nmt.config import AttentionPlotConfig

    trainer = _trainer(tmp_path, max_epochs=1, attention=AttentionPlotConfig(images=True))
    trainer.train()
    tags = _event_tags(tmp_path / "tensorboard")
    assert "nmt_attention/0000/0000000001/cross" in tags["tensors"]
    for fig in ("alignment", "alignment_words", "cross_layer0", "encoder_self_layer0", "decoder_self_layer0"):
        assert f"attention/dev0/{fig}" in tags["images"], fig
    for scalar in ("entropy/cross_layer0", "entropy/encoder_self_layer0", "entropy/decoder_self_layer0",
                   "coverage_deviation", "plot_seconds"):
        assert f"attention/{scalar}" in tags["scalars"], scalar
    # scripts/export_figures.py copies them out as PNG files (what the README shows)
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "export_figures.py"
    spec = importlib.util.spec_from_file_location("export_figures", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    records = module.export(tmp_path / "tensorboard", tmp_path / "png", ["attention/dev0/alignment"], None)
    assert {r["tag"] for r in records} == {"attention/dev0/alignment", "attention/dev0/alignment_words"}
    for r in records:
        assert Path(r["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plotting_failure_never_stops_training(tmp_path, monkeypatch, caplog):
    import nmt.viz

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib exploded")

    from nmt.config import AttentionPlotConfig

    monkeypatch.setattr(nmt.viz, "alignment_figures", broken)
    trainer = _trainer(tmp_path, max_epochs=2, attention=AttentionPlotConfig(images=True))
    with caplog.at_level("WARNING", logger="nmt.train"):
        results = trainer.train()
    assert results["epochs_completed"] == 2 and len(results["history"]) == 2
    assert "attention summaries/statistics failed" in caplog.text and "matplotlib exploded" in caplog.text
    assert "attention/plot_seconds" in _event_tags(tmp_path / "tensorboard")["scalars"]
