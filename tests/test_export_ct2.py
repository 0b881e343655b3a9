"""CTranslate2 export (issue 6): the converted model decodes exactly like ours; nmt-translate
engine=ctranslate2 keeps one output line per input line; int8 works; BiRNN is refused."""
from __future__ import annotations

import subprocess

import pytest
import torch

from test_cli_e2e import _run, _script, train_tiny

ct2 = pytest.importorskip("ctranslate2", reason="the ct2 extra is not installed: pip install -e '.[ct2]'")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny Transformer trained long enough (4,000 real pairs, 8 epochs, ~1 min) to write
    real sentences rather than stop at once, so that every greedy step is compared."""
    return train_tiny(tmp_path_factory, "ct2", "data.max_train_pairs=4000", "train.max_epochs=8",
                      "train.max_tokens=2048", "data.tokenizer.vocab_size=1000", "search.beam_size=1")


def _sentences(env, n=50):
    from pathlib import Path

    path = Path(env["NMT_DATA_DIR"]) / "multi30k" / "valid.en"
    if not path.exists():
        path = Path(env["NMT_DATA_DIR"]) / "multi30k" / "train.en"
    return path.read_text(encoding="utf-8").splitlines()[100:100 + n]


def test_converted_model_gives_our_greedy_output_on_50_sentences(trained_run, tmp_path):
    from nmt.data.batch import EOS_ID, Batch
    from nmt.export.ctranslate2 import CT2Translator
    from nmt.search import greedy_search
    from nmt.train.checkpoint import load_model

    run_dir, env, _ = trained_run
    out = tmp_path / "ct2"
    _run([_script("nmt-export"), f"ckpt={run_dir}", f"out={out}", "format=ctranslate2"], env)
    assert (out / "model.bin").is_file() and (out / "spm.model").is_file() and (out / "nmt.json").is_file()

    loaded = load_model(run_dir)
    src_ids = loaded.tokenizer.encode_src(_sentences(env))
    assert len(src_ids) == 50
    with torch.no_grad():
        ours = greedy_search(loaded.model, Batch.collate(src_ids), max_len_a=0.0, max_len_b=60)
    ours = [[int(t) for t in h[0].tokens] for h in ours]
    ours = [t[: t.index(EOS_ID)] if EOS_ID in t else t for t in ours]
    theirs = CT2Translator(out, intra_threads=1).translate_ids(src_ids, beam_size=1, max_decoding_length=60)
    assert sum(len(t) > 3 for t in ours) >= 40  # real outputs, not a model that stops at once
    assert theirs == ours


def test_translate_with_ctranslate2_keeps_lines_and_int8_export_works(trained_run, tmp_path):
    run_dir, env, _ = trained_run
    out = tmp_path / "ct2_int8"
    _run([_script("nmt-export"), f"ckpt={run_dir}", f"out={out}", "quantization=int8"], env)
    lines = ["A man rides a bike.", "", "Two dogs play in the snow."]
    proc = _run([_script("nmt-translate"), "engine=ctranslate2", f"model={out}", "beam_size=3"], env,
                stdin="\n".join(lines) + "\n")
    got = proc.stdout.split("\n")
    assert len(got) == len(lines) + 1 and got[1] == "" and got[0] and got[2]
    nbest = _run([_script("nmt-translate"), "engine=ctranslate2", f"model={out}", "nbest=2", "beam_size=3",
                  "A man rides a bike."], env).stdout.strip().split("\n")
    assert [line.split(" ||| ")[0] for line in nbest] == ["0", "0"]
    # a second export into the same directory is refused unless force=true
    proc = subprocess.run([_script("nmt-export"), f"ckpt={run_dir}", f"out={out}"], env=env,
                                        capture_output=True, text=True)
    assert proc.returncode != 0 and "force=true" in proc.stderr and "Traceback" not in proc.stderr


def test_birnn_and_bad_model_directories_get_clear_errors(tmp_path):
    from nmt.config import Config, ModelConfig
    from nmt.export.ctranslate2 import CT2Translator, ExportError, build_spec
    from nmt.train.checkpoint import LoadedModel

    cfg = Config()
    cfg.model = ModelConfig(arch="rnn")
    with pytest.raises(ExportError, match="not supported by CTranslate2"):
        build_spec(LoadedModel(model=None, config=cfg, tokenizer=None, meta={}, path=tmp_path))
    with pytest.raises(ExportError, match="not a CTranslate2 model written by nmt-export"):
        CT2Translator(tmp_path)


@pytest.mark.parametrize("activation", ["swiglu", "geglu"])
def test_gated_ffn_exports_to_ctranslate2_ffn_glu_with_the_same_scores(trained_run, tmp_path, activation):
    """A SwiGLU/GEGLU Transformer (random weights, the trained run's vocabulary) scores forced
    translations in CTranslate2 (ffn_glu) exactly as our model does, token by token."""
    import copy

    from nmt.data.batch import Batch
    from nmt.export.ctranslate2 import build_spec
    from nmt.models import build_model
    from nmt.train.checkpoint import LoadedModel, load_model

    run_dir, env, _ = trained_run
    loaded = load_model(run_dir)
    cfg = copy.deepcopy(loaded.config)
    cfg.model.activation = activation
    tok = loaded.tokenizer
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size).eval()
    with torch.no_grad():
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            layer.ffn.fc1.bias.normal_(0.0, 0.5)  # the gate and value biases must land in the right halves
    spec = build_spec(LoadedModel(model=model, config=cfg, tokenizer=tok, meta={}, path=run_dir))
    spec.validate()
    spec.optimize(quantization=None)
    (tmp_path / "glu").mkdir()
    spec.save(str(tmp_path / "glu"))

    sentences = _sentences(env, 8)
    src_ids, tgt_ids = tok.encode_src(sentences), tok.encode_tgt(sentences)  # a sentence is its own "translation"
    batch = Batch.collate(src_ids, tgt_ids)
    with torch.no_grad():
        logits = model(batch.src_tokens, batch.src_lengths, batch.src_mask, batch.tgt_in).logits
    ours = torch.log_softmax(logits, -1).gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1)
    translator = ct2.Translator(str(tmp_path / "glu"), intra_threads=1)
    results = translator.score_batch([tok.src_pieces(s) for s in src_ids], [tok.tgt_pieces(t) for t in tgt_ids])
    for i, result in enumerate(results):
        n = len(tgt_ids[i]) + 1  # the pieces and </s>
        torch.testing.assert_close(torch.tensor(result.log_probs), ours[i, :n], rtol=1e-3, atol=1e-3)


def test_export_replaces_only_an_earlier_export_and_leaves_no_stale_file(trained_run, tmp_path):
    """Issue 36 C14, R1, R31: the export is written beside out= and renamed into place; force=true
    replaces an earlier export wholly (no file of it is left), and a folder that is not an export
    is never replaced, force or not."""
    from nmt.export.ctranslate2 import ExportError, export_ctranslate2

    run_dir, _, _ = trained_run
    out = tmp_path / "ct2"
    export_ctranslate2(str(run_dir), out)
    (out / "stale.bin").write_bytes(b"from an older export")
    export_ctranslate2(str(run_dir), out, force=True)
    assert not (out / "stale.bin").exists() and (out / "model.bin").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct2"]  # no temporary directory left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    for force in (False, True):
        with pytest.raises(ExportError, match="not a model exported by nmt-export"):
            export_ctranslate2(str(run_dir), mine, force=force)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
