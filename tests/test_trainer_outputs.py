"""Parts of training that nothing else would notice missing (issue 36, "tests that cannot fail
today"): gradient clipping, and the TensorBoard validation scalars and sample translations.
Early stopping on patience is in test_run_dir.py. In process, on test_resume's reverse task."""
from __future__ import annotations

import pytest
import torch

from test_resume import _trainer


def test_gradients_are_clipped_to_clip_norm_before_the_update(tmp_path):
    """optim.clip_norm: every update sees gradients of total norm <= clip_norm, while the logged
    norm is the norm before clipping (and larger here)."""
    trainer = _trainer(tmp_path, max_steps=4)
    trainer.updater.clip_norm = 0.05  # optim.clip_norm
    seen, logged = [], []

    def before_step(optimizer, args, kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    trainer.optimizer.register_step_pre_hook(before_step)
    update = trainer.step
    trainer.step = lambda group: (lambda stats: (logged.append(stats.grad_norm), stats)[1])(update(group))
    trainer.train()
    assert len(seen) == 4 and all(n <= 0.05 * (1 + 1e-4) for n in seen), seen
    assert all(n > 0.05 for n in logged), logged


def test_validation_writes_scalars_and_sample_translations_to_tensorboard(tmp_path):
    """TensorBoard: valid/{loss,ppl,bleu,chrf} at every validation's step, and the sample
    translations (source, reference, hypothesis) as text under valid/samples."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = _trainer(tmp_path, max_epochs=2, num_samples=2)
    results = trainer.train()
    steps = [h["step"] for h in results["history"]]
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    for name in ("loss", "ppl", "bleu", "chrf"):
        assert [e.step for e in acc.Scalars(f"valid/{name}")] == steps, name
    assert [e.value for e in acc.Scalars("valid/bleu")] == pytest.approx([h["bleu"] for h in results["history"]])
    texts = acc.Tensors("valid/samples/text_summary")
    assert [t.step for t in texts] == steps
    shown = texts[-1].tensor_proto.string_val[0].decode()
    assert trainer.data.valid.src[0] in shown and trainer.data.valid.tgt[1] in shown
