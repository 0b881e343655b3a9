"""End to end through the console scripts: nmt-train (debug=tiny on 200 real Multi30k pairs),
then nmt-translate and nmt-evaluate on the checkpoint alone."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        pytest.fail(f"console script {name} is not installed: run pip install -e .")
    return path


def _run(args, env, stdin=None, cwd=None):
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def train_tiny(tmp_path_factory, name: str, *overrides: str):
    """``nmt-train debug=tiny <overrides>`` on real Multi30k in a fresh folder -> (run_dir, env, process);
    skips when the corpus is not available."""
    from conftest import require_multi30k

    data = require_multi30k()
    tmp = tmp_path_factory.mktemp(name)
    run_dir = tmp / "run"
    env = dict(os.environ, NMT_DATA_DIR=str(data))
    proc = _run([_script("nmt-train"), "debug=tiny", *overrides, f"hydra.run.dir={run_dir}",
                 f"data.tokenizer.cache_dir={tmp / 'spm'}", "train.progress_bar=false"], env, cwd=tmp)
    return run_dir, env, proc


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return train_tiny(tmp_path_factory, "e2e", "data.max_train_pairs=200")


def test_train_writes_checkpoints_results_and_tensorboard(trained_run):
    run_dir, _, proc = trained_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] > 0 and results["test"]["split"] == "test2016"
    assert results["tgt_tokens_per_s"] > 0 and results["src_tokens_per_s"] > 0
    assert results["test"]["bleu_signature"].startswith("nrefs:1|case:mixed")
    index = json.loads((run_dir / "checkpoints" / "checkpoints.json").read_text())
    best = run_dir / "checkpoints" / index["best"]
    for name in ("model.safetensors", "trainer_state.pt", "config.yaml", "meta.json", "spm.model", "COMPLETE"):
        assert (best / name).exists(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    hyps = (run_dir / "test2016.hyp.de").read_text().split("\n")
    assert len(hyps) == 40 + 1  # one line per test sentence (max_test_pairs=40) and a final newline
    assert "test test2016: BLEU" in proc.stdout + proc.stderr
    assert "test test2016: BLEU" in "".join(p.read_text() for p in run_dir.glob("*.log"))  # the text log


def test_translate_from_arguments_and_stdin(trained_run, tmp_path):
    run_dir, env, _ = trained_run
    env = {k: v for k, v in env.items() if k != "NMT_DATA_DIR"}  # the checkpoint alone suffices
    out = _run([_script("nmt-translate"), f"ckpt={run_dir}", "beam_size=2", "A man is walking.", "Two dogs."],
               env, cwd=tmp_path).stdout.split("\n")
    assert len(out) == 3 and out[2] == ""
    lines = "A dog runs.\n\nA woman sings a song.\n"
    proc = _run([_script("nmt-translate"), f"ckpt={run_dir}"], env, stdin=lines, cwd=tmp_path)
    got = proc.stdout.split("\n")
    assert len(got) == 4 and got[1] == "" and got[3] == ""  # empty input line -> empty output line
    assert "line 2 is empty" in proc.stderr
    nbest = _run([_script("nmt-translate"), f"ckpt={run_dir}", "nbest=2", "beam_size=2"], env,
                 stdin="A dog runs.\n", cwd=tmp_path).stdout.strip().split("\n")
    assert len(nbest) == 2 and all(line.startswith("0 ||| ") for line in nbest)


def test_translate_keeps_one_output_line_per_input_line_whatever_the_input(trained_run, tmp_path):
    """R25, R26: empty, whitespace-only, invalid UTF-8, NUL, a 10,000-token line and no final
    newline: one output line per input line, in order, warnings on stderr, exit 0."""
    run_dir, env, _ = trained_run
    long_line = " ".join(["dog"] * 10000)
    data = (b"A dog runs.\n   \n\xff\xfe bad bytes\nA man\x00with a NUL.\n" + long_line.encode()
            + b"\nTwo women sing.")
    (tmp_path / "in.txt").write_bytes(data)
    proc = _run([_script("nmt-translate"), f"ckpt={run_dir}", f"input={tmp_path / 'in.txt'}", "beam_size=2"],
                env, cwd=tmp_path)
    out = proc.stdout.split("\n")
    assert len(out) == 7 and out[-1] == ""  # six lines, each newline-terminated
    assert out[1] == "" and out[2] == ""  # (a tiny model may also emit an empty translation elsewhere)
    for warning in ("line 2 is empty", "line 3: invalid UTF-8 at byte 0", "line 3 is empty",
                    "line 4: control characters", "input line 5 has", "truncated to"):
        assert warning in proc.stderr, warning
    args = _run([_script("nmt-translate"), f"ckpt={run_dir}", "beam_size=2", "--", "A dog\x07 runs.", "  "],
                env, cwd=tmp_path)
    assert len(args.stdout.split("\n")) == 3 and args.stdout.split("\n")[1] == ""


def test_a_long_line_and_a_model_that_never_ends_keep_every_output_line(trained_run, tmp_path, monkeypatch):
    """R25 (issue 36 B5): a first line of 900 words, then "A man rides a bike.", with a model
    that never emits EOS on its own: the output is capped at the model's positions (it raised
    "sequence position 1025 exceeds max_positions=1024" and wrote no output file at all)."""
    import math

    from nmt.cli.translate import main
    from nmt.data.batch import EOS_ID
    from nmt.models.seq2seq import Seq2Seq

    step = Seq2Seq.step

    def never_eos(self, tokens, state, need_attn=True):
        lprobs, attn, state = step(self, tokens, state, need_attn)
        lprobs[:, EOS_ID] = math.log(1e-30)  # finite: the search still ends a hypothesis at its maximum length
        return lprobs, attn, state

    monkeypatch.setattr(Seq2Seq, "step", never_eos)
    run_dir, _, _ = trained_run
    (tmp_path / "in.txt").write_text(" ".join(["bicycle"] * 900) + "\nA man rides a bike.\n")
    out = tmp_path / "out.txt"
    main([f"ckpt={run_dir}", f"input={tmp_path / 'in.txt'}", f"output={out}", "beam_size=2", "batch_size=1"])
    lines = out.read_text().split("\n")
    assert len(lines) == 3 and lines[2] == "" and lines[0] and lines[1]


def test_translate_errors_are_clear(trained_run, tmp_path):
    run_dir, env, _ = trained_run
    proc = subprocess.run([_script("nmt-translate"), f"ckpt={run_dir}", "beam_sise=2", "x"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode != 0 and "beam_sise" in proc.stderr
    proc = subprocess.run([_script("nmt-translate"), f"ckpt={tmp_path / 'nothing'}", "x"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    proc = subprocess.run([_script("nmt-translate"), f"ckpt={run_dir}"], input="", capture_output=True, text=True,
                          env=env)
    assert proc.returncode != 0 and "no input" in proc.stderr
    # R12: a newer format version and a truncated weights file: one line, non-zero, no traceback
    from nmt.train.checkpoint import resolve_checkpoint

    bad = tmp_path / "bad"
    shutil.copytree(resolve_checkpoint(run_dir), bad)
    meta = json.loads((bad / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps(dict(meta, format_version=99)))
    for problem, expected in (("newer", "newer than this nmt supports"), ("truncated", "model.safetensors")):
        if problem == "truncated":
            (bad / "meta.json").write_text(json.dumps(meta))
            weights = (bad / "model.safetensors").read_bytes()
            (bad / "model.safetensors").write_bytes(weights[: len(weights) // 3])
        proc = subprocess.run([_script("nmt-translate"), f"ckpt={bad}", "x"], capture_output=True, text=True, env=env)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode != 0 and len(errors) == 1 and expected in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_evaluate_prints_bleu_with_signatures(trained_run, tmp_path):
    run_dir, env, _ = trained_run
    out = tmp_path / "hyp.txt"
    proc = _run([_script("nmt-evaluate"), f"ckpt={run_dir}", "split=test2016", f"output={out}", "beam_size=2"],
                env, cwd=tmp_path)
    for signature in ("BLEU signature: nrefs:1|case:mixed", "BLEU lc signature: nrefs:1|case:lc", "chrF signature: ",
                      "TER signature: "):
        assert signature in proc.stdout, proc.stdout
    result = json.loads(proc.stdout.strip().split("\n")[-1])
    assert result["sets"][0]["sentences"] == 1000  # the whole split: evaluation never uses the debug slice
    assert len(out.read_text().split("\n")) == 1001


def _links(text):
    return [tuple(map(int, link.split("-"))) for link in text.split()]


def _records(logdir) -> dict:
    """sentence -> the ``meta`` of the Attention tab's records in a logdir (step 0)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    from nmt.tensorboard.records import parse_tag

    out = {}
    for path in Path(logdir).rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"tensors": 0})
        acc.Reload()
        for name in acc.Tags()["tensors"]:
            parsed = parse_tag(name)
            if parsed and parsed[2] == "meta":
                out[parsed[0]] = json.loads(tensor_util.make_ndarray(acc.Tensors(name)[0].tensor_proto).item())
    return out


def test_translate_prints_alignments_and_writes_attention_figures(trained_run, tmp_path):
    run_dir, env, _ = trained_run
    png, logdir = tmp_path / "png", tmp_path / "tb"
    sources = ["A man is walking.", "Two dogs play in the tall grass."]
    proc = _run([_script("nmt-translate"), f"ckpt={run_dir}", "beam_size=2", "print_alignment=true",
                 f"attention.png_dir={png}", f"attention.logdir={logdir}", "attention.ascii=true"], env,
                stdin="\n".join(sources) + "\n", cwd=tmp_path)
    lines = proc.stdout.split("\n")
    assert len(lines) == 3 and lines[2] == ""
    for src, line in zip(sources, lines):
        text, links = line.split("\t")
        targets = [j for _, j in _links(links)]
        assert len(targets) == len(set(targets))  # each target word links to one source word
        assert all(0 <= i < len(src.split()) and 0 <= j < len(text.split()) for i, j in _links(links))
    names = {p.name for p in png.glob("*.png")}
    for k in (1, 2):
        for fig in ("alignment", "alignment_words", "cross_layer0", "encoder_self_layer0", "decoder_self_layer0"):
            assert f"sentence{k}_{fig}.png" in names
    # the Attention tab's records: sentence = input line - 1, step 0, the translation as printed
    records = _records(logdir)
    assert sorted(records) == [0, 1]
    assert records[1]["hypothesis"] == lines[1].split("\t")[0] and records[1]["source"] == sources[1]
    # the character heatmaps: one row per target word (+ </s>), each row's weights visible
    for k, line in zip((1, 2), lines):
        block = proc.stderr.split(f"sentence{k}:\n")[1].split("\n\n")[0].split("\n")
        rows = [r for r in block if r[:12].strip()]  # rows carry a target label; header rows do not
        assert len(rows) == len(line.split("\t")[0].split()) + 1
        assert all(r[13:].strip() for r in rows)


def test_align_writes_pharaoh_and_scores_against_the_hand_made_gold_set(trained_run, tmp_path):
    run_dir, env, _ = trained_run
    data = Path(env["NMT_DATA_DIR"]) / "multi30k"
    gold = ROOT / "tests" / "data" / "align" / "multi30k_valid_1-50.de-en.wa"
    en, de = tmp_path / "valid50.en", tmp_path / "valid50.de"
    for lang, path in (("en", en), ("de", de)):
        path.write_text("".join((data / f"valid.{lang}").read_text().splitlines(keepends=True)[:50]))
    out = tmp_path / "align.wa"
    # the debug model translates English to German; the gold links are German-English
    proc = _run([_script("nmt-align"), f"ckpt={run_dir}", f"src={en}", f"tgt={de}", f"gold={gold}",
                 "gold_reversed=true", f"output={out}", f"logdir={tmp_path / 'tb'}"], env, cwd=tmp_path)
    records = _records(tmp_path / "tb")  # every pair's attention and gold links for the Attention tab
    assert sorted(records) == list(range(50)) and records[3]["search"] == {"forced": True}
    assert records[3]["gold"]["sure"] and records[3]["hypothesis"] == de.read_text().splitlines()[3]
    lines = out.read_text().split("\n")
    assert len(lines) == 51 and lines[50] == ""
    en_lines, de_lines = en.read_text().splitlines(), de.read_text().splitlines()
    for links, s, t in zip(lines, en_lines, de_lines):
        assert all(0 <= i < len(s.split()) and 0 <= j < len(t.split()) for i, j in _links(links))
    average = json.loads(proc.stderr.strip().split("\n")[-1])
    assert 0.0 <= average["aer"] <= 1.0 and average["head"] is None and average["sentences"] == 50
    best = _run([_script("nmt-align"), f"ckpt={run_dir}", f"src={en}", f"tgt={de}", f"gold={gold}",
                 "gold_reversed=true", "head=best"], env, cwd=tmp_path)
    chosen = json.loads(best.stderr.strip().split("\n")[-1])
    assert (chosen["head"] is None or isinstance(chosen["head"], int)) and "best of" in best.stderr
    assert chosen["aer"] <= average["aer"]  # the default layer's head average is one of the candidates
    assert len(best.stdout.split("\n")) == 51
    bad = subprocess.run([_script("nmt-align"), f"ckpt={run_dir}", f"src={en}", f"tgt={de}", f"gold={en}"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "valid50.en line 1" in bad.stderr and "not an alignment link" in bad.stderr
    nogold = subprocess.run([_script("nmt-align"), f"ckpt={run_dir}", f"src={en}", f"tgt={de}", "head=best"],
                            capture_output=True, text=True, env=env)
    assert nogold.returncode != 0 and "head=best needs gold" in nogold.stderr


def test_translate_fuzzed_input_gives_one_output_line_per_input_line(trained_run):
    """R25: random unicode and bytes through the whole nmt-translate path (in process, greedy):
    never a crash, always one output line per input line."""
    import tempfile

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from nmt.cli.translate import main

    run_dir, _, _ = trained_run

    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(lines=st.lists(st.one_of(st.text(max_size=40), st.binary(max_size=20).map(
        lambda b: b.decode("latin-1"))), min_size=1, max_size=6),
        junk=st.binary(max_size=6))
    def check(lines, junk):
        data = "\n".join(t.replace("\n", " ") for t in lines).encode("utf-8") + junk.replace(b"\n", b"") + b"\n"
        with tempfile.TemporaryDirectory() as d:
            src, out = Path(d) / "in.txt", Path(d) / "out.txt"
            src.write_bytes(data)
            main([f"ckpt={run_dir}", f"input={src}", f"output={out}", "beam_size=1"])
            assert out.read_text(encoding="utf-8").count("\n") == data.count(b"\n")

    check()
