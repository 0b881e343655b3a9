"""A Hydra multirun sweep end to end: attention variants x seeds, one directory and one TensorBoard
run (with HParams) per job, versions in every log and results.json, one table from
scripts/collect_results.py with seeds averaged."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli_e2e import ROOT, _run, _script


def _hparams(event_file: Path) -> tuple[set, set]:
    """Hyperparameter names and metric tags recorded for TensorBoard's HParams tab."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    names, metrics = set(), set()
    for event in EventFileLoader(str(event_file)).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name != "hparams":
                continue
            data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
            names |= set(data.session_start_info.hparams)
            metrics |= {m.name.tag for m in data.experiment.metric_infos}
    return names, metrics


@pytest.mark.slow
def test_multirun_over_attention_and_seeds(tmp_path):
    from conftest import require_multi30k

    data = require_multi30k()
    sweep = tmp_path / "sweep"
    env = {"NMT_DATA_DIR": str(data), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    _run([_script("nmt-train"), "-m", "debug=tiny", "model=rnn", "model/attention=bahdanau,luong_general", "seed=1,2",
          "data.max_train_pairs=100", "train.max_steps=6", "train.eval_test=false", "train.attention.sentences=0",
          "train.attention.stats_sentences=0", "data.max_valid_pairs=20", "model.hidden_size=64", "model.embed_dim=32", "train.progress_bar=false", f"hydra.sweep.dir={sweep}",
          f"data.tokenizer.cache_dir={tmp_path / 'spm'}"], env, cwd=tmp_path)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    seeds = set()
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        assert results["versions"]["torch"] and results["versions"]["nmt"]
        assert "versions: nmt " in (job / "train.log").read_text()
        events = list((job / "tensorboard").glob("events.out.tfevents.*"))
        assert len(events) == 1  # one TensorBoard run per job, the HParams in it
        names, metrics = _hparams(events[0])
        assert {"model.attention.score", "train.seed", "optim.lr"} <= names
        assert "hparams/best_valid_bleu" in metrics
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        seeds.add(next(line for line in overrides.splitlines() if "seed=" in line))
    assert {"- seed=1", "- seed=2"} <= seeds
    table = subprocess.run([sys.executable, str(ROOT / "scripts" / "collect_results.py"), str(sweep)],
                           capture_output=True, text=True, check=True).stdout
    rows = [line for line in table.splitlines() if line.startswith("| `model/attention=")]
    assert len(rows) == 2 and all("| 2 |" in row for row in rows), table  # each variant: 2 seeds averaged
