"""Runs for the Attention dashboard's tests: real training on the synthetic reverse task of
test_resume (a few seconds each), many validations, the records the trainer wrote kept aside,
and a TensorBoard server started on them."""
from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from nmt.config import (AttentionConfig, AttentionPlotConfig, Config, ModelConfig, OptimConfig, RNNDecoderConfig,
                        SearchConfig, TrainConfig)
from nmt.data.text import ParallelText
from nmt.data.dataset import TokenizedDataset
from nmt.train.data import PreparedData
from nmt.train.trainer import Trainer
from test_train_parts import IntTok

VOCAB = 30
TRANSFORMER = ModelConfig(d_model=32, num_heads=4, ffn_dim=64, encoder_layers=3, decoder_layers=3, dropout=0.1)
RNN = ModelConfig(arch="rnn", embed_dim=16, hidden_size=16, encoder_layers=1, decoder_layers=1, dropout=0.1,
                  decoder=RNNDecoderConfig(style="luong", input_feeding=True),
                  attention=AttentionConfig(score="general", window="local_p", window_size=2))


def reverse_data(n_valid: int = 8) -> PreparedData:
    """48 training pairs of the reverse task and ``n_valid`` dev pairs (token ids as text)."""
    rng = random.Random(0)
    src = [[rng.randrange(4, VOCAB) for _ in range(rng.randrange(3, 10))] for _ in range(48 + n_valid)]
    train, dev = src[:48], src[48:]
    valid_src = [" ".join(str(i - 4) for i in s) for s in dev]
    valid = ParallelText(valid_src, [" ".join(reversed(s.split())) for s in valid_src], list(range(1, n_valid + 1)))
    return PreparedData(IntTok(), TokenizedDataset(train, [s[::-1] for s in train]), valid, None)


def train_run(run_dir: Path, model: ModelConfig, validations: int, probe: str | None = None,
              sentences: int = 8) -> tuple[Trainer, dict, list]:
    """Train until ``validations`` validations (one every 2 updates) have logged their records;
    returns the trainer, its results and every record it wrote, in order."""
    cfg = Config(model=model, optim=OptimConfig(lr=3e-3, warmup_steps=5),
                 search=SearchConfig(beam_size=2, max_len_b=3),
                 train=TrainConfig(max_tokens=60, max_epochs=1000, max_steps=2 * validations, valid_every_steps=2,
                                   log_every_steps=10, keep_last=2, eval_test=False, progress_bar=False, patience=0, num_threads=1,
                                   attention=AttentionPlotConfig(sentences=sentences, probe=probe, stats_sentences=8)))
    trainer = Trainer(cfg, reverse_data(), run_dir)
    written = []
    attention = trainer.monitor.attention

    def keep(records):
        written.extend(records)
        return attention(records)

    trainer.monitor.attention = keep
    return trainer, trainer.train(), written


def start_tensorboard(logdir: Path, load_fast: bool) -> tuple[subprocess.Popen, str]:
    """``tensorboard --logdir`` on 127.0.0.1, port 0 (the free port it picks is read from its
    log); returns the process and the base URL."""
    exe = Path(sys.executable).parent / "tensorboard"
    proc = subprocess.Popen([str(exe), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
                             f"--load_fast={'true' if load_fast else 'false'}", "--reload_interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    deadline, seen = time.monotonic() + 90, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if found:
            return proc, found.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("tensorboard did not start:\n" + "".join(seen[-30:]))


def wait_for_data(url: str, run_count: int, timeout: float = 60) -> dict:
    """Poll ``/data/plugin/nmt_attention/runs`` until ``run_count`` runs are loaded."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/data/plugin/nmt_attention/runs", timeout=10) as r:
                body = json.loads(r.read())
            if len(body["runs"]) >= run_count:
                return body
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"tensorboard at {url} did not load {run_count} runs of attention records in {timeout} s")
