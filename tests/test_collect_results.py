"""scripts/collect_results.py: a sweep's results.json files become one table, seeds averaged."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "collect_results.py"


@pytest.fixture(scope="module")
def collect():
    spec = importlib.util.spec_from_file_location("collect_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(root: Path, name: str, overrides: list[str], bleu: float, tok_s: int = 3000) -> None:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    results = {"steps": 300, "train_minutes": 10.0, "tgt_tokens_per_s": tok_s, "best_valid_bleu": bleu + 1,
               "search": {"length_penalty": 1.4}, "test": {"bleu": bleu, "bleu_lc": bleu + 0.5, "chrf": 50.0}}
    (d / "results.json").write_text(json.dumps(results))


def test_seeds_are_averaged_and_common_overrides_hoisted(tmp_path, collect, capsys):
    base = ["experiment=multi30k_rnn_luong", "train.max_time_minutes=10"]
    _run(tmp_path, "0", base + ["model/attention=luong_dot", "seed=1"], 20.0)
    _run(tmp_path, "1", base + ["model/attention=luong_dot", "seed=2"], 22.0)
    _run(tmp_path, "2", base + ["model/attention=local_p", "seed=1"], 25.0, tok_s=2500)
    collect.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "Common overrides: `experiment=multi30k_rnn_luong` `train.max_time_minutes=10`" in out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| `")}
    assert set(rows) == {"`model/attention=luong_dot`", "`model/attention=local_p`"}
    dot = rows["`model/attention=luong_dot`"]
    assert dot[0] == "2"  # two seeds
    assert dot[6] == "21.00 ± 1.41"  # test BLEU mean ± sample std
    assert rows["`model/attention=local_p`"][6] == "25.00"
    assert rows["`model/attention=local_p`"][3] == "2500"


def test_csv_output(tmp_path, collect, capsys):
    _run(tmp_path, "a", ["model/attention=luong_dot"], 20.0)
    collect.main([str(tmp_path / "a" / "results.json"), "--csv"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("run,seeds,updates,minutes,tgt tok/s,dev BLEU")
    assert lines[1].split(",")[-3:] == ["20.00", "20.50", "50.00"]


def test_missing_and_corrupt_inputs_are_named(tmp_path, collect, capsys):
    with pytest.raises(SystemExit) as e:
        collect.main([str(tmp_path / "nope")])
    assert e.value.code == 2 and "nope: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        collect.main([str(tmp_path)])
    assert e.value.code == 2 and "no results.json under" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    with pytest.raises(SystemExit) as e:
        collect.main([str(tmp_path)])
    assert e.value.code == 2 and "bad/results.json: cannot read results" in capsys.readouterr().err
