"""BLEU/chrF guardrails (RELIABILITY.md R29)."""
from pathlib import Path

import pytest
import sacrebleu

from nmt.evaluate import score_corpus


def test_scores_match_sacrebleu_on_detokenised_text_with_signatures():
    """R29: references passed as [refs], detokenised text, signatures stored, chrF beside BLEU."""
    hyps = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "eine frau singt"]
    refs = ["Ein Mann fährt ein Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau singt."]
    got = score_corpus(hyps, refs)
    assert got["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    assert got["bleu_lc"] == round(sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score, 2)
    assert got["chrf"] == round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)
    assert got["bleu_lc"] > got["bleu"]  # case matters in the cased score
    assert got["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert got["bleu_lc_signature"].startswith("nrefs:1|case:lc|")
    assert got["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")
    # a perfect corpus scores 100, an unrelated one close to 0
    assert score_corpus(refs, refs)["bleu"] == 100.0
    assert score_corpus(["x y z"] * 3, refs)["bleu"] < 1.0


def test_unequal_lengths_are_refused():
    """R29: hypotheses and references must have equal length (checked, never truncated)."""
    with pytest.raises(ValueError, match="2 hypotheses but 3 references"):
        score_corpus(["a", "b"], ["a", "b", "c"])


def test_ter_matches_sacrebleu_with_signature():
    """TER (Snover et al. 2006) is sacrebleu's: edits / reference words, case-insensitive by default."""
    from sacrebleu.metrics import TER

    cases = [(["a b c d"], ["a b c d e"], 20.0),  # one insertion over 5 reference words
             (["the cat sat"], ["the cat sat on the mat"], 50.0),
             (["b a c d"], ["a b c d"], 25.0),  # one shift
             (["A B"], ["a b"], 0.0)]  # case-insensitive
    for hyps, refs, expected in cases:
        got = score_corpus(hyps, refs)
        assert got["ter"] == expected == round(TER().corpus_score(hyps, [refs]).score, 2)
        assert got["ter_signature"].startswith("nrefs:1|case:lc|tok:tercom|norm:no|punct:yes|asian:no|version:")
    hyps = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen.", "eine frau singt"]
    refs = ["Ein Mann fährt ein Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau singt."]
    assert score_corpus(hyps, refs)["ter"] == round(sacrebleu.corpus_ter(hyps, [refs]).score, 2)


def _synthetic(seed=0, n=300):
    """References, a good system (10% of words dropped) and a degraded one (60% more dropped)."""
    import random

    rng = random.Random(seed)
    words = ("ein mann frau hund kind spielt läuft im park auf der straße mit einem roten ball "
             "zwei drei kleine große blauen hemd sitzt steht vor dem haus").split()
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))) for _ in range(n)]
    good = [" ".join(w for w in r.split() if rng.random() > 0.1) for r in refs]
    bad = [" ".join(w for w in g.split() if rng.random() > 0.6) for g in good]
    return refs, good, bad


def test_paired_bootstrap_separates_a_degraded_system_and_not_a_system_from_itself():
    from nmt.evaluate import paired_bootstrap

    refs, good, bad = _synthetic()
    better = paired_bootstrap(good, bad, refs)
    for metric in ("bleu", "chrf", "ter"):
        system, base = better[metric]["system"], better[metric]["baseline"]
        assert system["p_value"] < 0.05, metric
        assert "|bs:1000|seed:12345|" in better[metric]["signature"]  # sacrebleu's defaults
        for s in (system, base):
            assert abs(s["mean"] - s["score"]) <= s["ci"] and s["ci"] > 0
    assert better["bleu"]["system"]["score"] > better["bleu"]["baseline"]["score"] + 10
    assert better["ter"]["system"]["score"] < better["ter"]["baseline"]["score"]  # TER: lower is better
    same = paired_bootstrap(good, list(good), refs, n_samples=200)
    assert all(same[m]["system"]["p_value"] == 1.0 for m in same)
    assert "|bs:200|" in same["bleu"]["signature"]
    # one sentence changed out of 300 is no significant difference
    nearly = list(good)
    nearly[0] = bad[0]
    assert paired_bootstrap(nearly, good, refs)["bleu"]["system"]["p_value"] > 0.05
    with pytest.raises(ValueError, match="299 hypotheses but 300 references"):
        paired_bootstrap(good[:-1], good, refs)


# ------------------------------------------------------------------------------------- the CLI
def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _json(out: str) -> dict:
    import json

    return json.loads(out.strip().split("\n")[-1])


def test_cli_paired_bootstrap_on_hypothesis_files(tmp_path, capsys):
    from nmt.cli.evaluate import evaluate

    refs, good, bad = _synthetic()
    ref, a, b = _write(tmp_path / "ref.de", refs), _write(tmp_path / "a.de", good), _write(tmp_path / "b.de", bad)
    result = evaluate([f"hyp={a}", f"baseline_hyp={b}", f"ref={ref}", "bootstrap_samples=300"])
    out = capsys.readouterr().out
    (entry,) = result["sets"]
    assert entry["set"] == "ref.de" and entry["sentences"] == 300 and entry["bootstrap_samples"] == 300
    assert entry["bleu"] == score_corpus(good, refs)["bleu"]
    assert entry["baseline"]["bleu"] == score_corpus(bad, refs)["bleu"]
    assert all(entry["significance"][m]["system"]["p_value"] < 0.05 for m in ("bleu", "chrf", "ter"))
    assert "paired bootstrap resampling (300 resamples)" in out and "p=0.0033*" in out
    assert _json(out) == result
    same = evaluate([f"hyp={a}", f"baseline_hyp={a}", f"ref={ref}", "bootstrap_samples=100"])
    assert same["sets"][0]["significance"]["bleu"]["system"]["p_value"] == 1.0


def test_cli_count_mismatches_name_the_files(tmp_path):
    from nmt.cli.evaluate import evaluate

    refs, good, _ = _synthetic(n=20)
    ref, ref2 = _write(tmp_path / "r1.de", refs), _write(tmp_path / "r2.de", refs)
    src = _write(tmp_path / "s1.en", refs)
    hyp, short = _write(tmp_path / "h.de", good), _write(tmp_path / "short.de", good[:-1])
    cases = [([f"hyp={hyp}", f"src={src}", f"ref={ref},{ref2}"], ["s1.en", "r1.de", "r2.de", "1 files", "2"]),
             ([f"hyp={short}", f"ref={ref}"], [f"{short} has 19 lines", f"{ref} have 20"]),
             ([f"hyp={hyp},{hyp}", f"ref={ref}"], ["2 system hypothesis files", "for 1 test sets"]),
             ([f"hyp={hyp}", f"baseline_hyp={short}", f"ref={ref}"], [f"{short} has 19 lines"]),
             ([f"ref={ref}"], ["give ckpt="])]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as err:
            evaluate(argv)
        message = str(err.value)
        assert message.startswith("error: ") and all(e in message for e in expected), (argv, message)


# ------------------------------------------------------------------ the CLI on a tiny checkpoint
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny model trained for 2 epochs (2 checkpoints kept) and a small copy of two Multi30k
    splits (data_dir=) so that decoding stays fast."""
    from test_cli_e2e import train_tiny

    run_dir, env, _ = train_tiny(tmp_path_factory, "evaluate", "data.max_train_pairs=100", "train.max_epochs=2",
                                 "train.keep_last=4", "train.eval_test=false", "train.attention.sentences=0",
                                 "train.attention.stats_sentences=0")
    mini = tmp_path_factory.mktemp("mini")
    for split, n in (("test2016", 12), ("valid", 9)):
        for lang in ("en", "de"):
            lines = (Path(env["NMT_DATA_DIR"]) / "multi30k" / f"{split}.{lang}").read_text().split("\n")[:n]
            _write(mini / f"{split}.{lang}", lines)
    steps = sorted(p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert len(steps) == 2
    return run_dir, mini, steps


def test_cli_several_sets_one_table_and_one_json_line(tiny_run, tmp_path, capsys):
    from nmt.cli.evaluate import evaluate

    run_dir, mini, _ = tiny_run
    extra_src = _write(tmp_path / "extra.en", ["A dog runs.", "Two men talk."])
    extra_ref = _write(tmp_path / "extra.de", ["Ein Hund rennt.", "Zwei Männer reden."])
    outs = [tmp_path / f"out{i}.de" for i in range(3)]
    result = evaluate([f"ckpt={run_dir}", "split=test2016,valid", f"src={extra_src}", f"ref={extra_ref}",
                       f"data_dir={mini}", "beam_size=1", "num_threads=1", f"output={','.join(map(str, outs))}"])
    out = capsys.readouterr().out
    assert [(s["set"], s["sentences"]) for s in result["sets"]] == [("test2016.de", 12), ("valid.de", 9),
                                                                    ("extra.en", 2)]
    assert result["search"]["beam_size"] == 1
    refs = [(mini / "test2016.de").read_text().split("\n")[:12], (mini / "valid.de").read_text().split("\n")[:9],
            ["Ein Hund rennt.", "Zwei Männer reden."]]
    for entry, path, ref in zip(result["sets"], outs, refs):
        hyps = path.read_text().split("\n")[:-1]
        assert entry["hypotheses"] == str(path) and len(hyps) == len(ref)
        scores = score_corpus(hyps, ref)
        assert {k: entry[k] for k in ("bleu", "bleu_lc", "chrf", "ter")} == {k: scores[k] for k in
                                                                             ("bleu", "bleu_lc", "chrf", "ter")}
    lines = out.strip().split("\n")
    assert lines[0].split() == ["set", "sentences", "BLEU", "BLEU", "lc", "chrF", "TER"]
    assert [line.split()[:2] for line in lines[1:4]] == [["test2016.de", "12"], ["valid.de", "9"], ["extra.en", "2"]]
    signatures = [line for line in lines if " signature: " in line]  # once per metric, not per set
    assert [s.split(" signature: ")[0] for s in signatures] == ["BLEU", "BLEU lc", "chrF", "TER"]
    assert signatures[1].endswith(result["signatures"]["bleu_lc"]) and "case:lc" in signatures[1]
    assert _json(out) == result
    with pytest.raises(SystemExit, match="output= names 1 files for 3 test sets"):
        evaluate([f"ckpt={run_dir}", "split=test2016,valid", f"src={extra_src}", f"ref={extra_ref}",
                  f"data_dir={mini}", f"output={outs[0]}"])


def test_cli_ensemble_and_paired_test_between_checkpoints(tiny_run, tmp_path, capsys):
    """ckpt=a,b decodes with an ensemble: a checkpoint ensembled with itself translates exactly as
    it does alone; baseline= decodes a second system and runs the paired bootstrap test."""
    from nmt.cli.evaluate import evaluate

    run_dir, mini, (first, last) = tiny_run
    common = ["split=valid", f"data_dir={mini}", "beam_size=2", "num_threads=1"]
    alone, twice, pair = (tmp_path / f"{n}.de" for n in ("alone", "twice", "pair"))
    evaluate([f"ckpt={first}", f"output={alone}", *common])
    result = evaluate([f"ckpt={first},{first}", f"output={twice}", *common])
    assert result["system"] == f"{first},{first}"
    assert twice.read_text() == alone.read_text() and alone.read_text().strip()  # not all empty lines
    result = evaluate([f"ckpt={first},{last}", f"baseline={first}", f"output={pair}", "bootstrap_samples=50",
                       *common])
    out = capsys.readouterr().out
    (entry,) = result["sets"]
    assert result["baseline"] == str(first) and result["baseline_search"]["beam_size"] == 2
    assert entry["baseline"]["hypotheses"] == str(run_dir / "hyp.baseline.valid.de")
    base_hyps = (run_dir / "hyp.baseline.valid.de").read_text().split("\n")[:-1]
    assert base_hyps == alone.read_text().split("\n")[:-1]
    assert entry["baseline"]["bleu"] == score_corpus(base_hyps, _mini_refs(mini))["bleu"]
    for m in ("bleu", "chrf", "ter"):
        sig = entry["significance"][m]
        assert 0 < sig["system"]["p_value"] <= 1 and "|bs:50|seed:12345|" in sig["signature"]
        assert sig["system"]["score"] == entry[m] and sig["baseline"]["score"] == entry["baseline"][m]
    assert "paired bootstrap resampling (50 resamples)" in out
    with pytest.raises(SystemExit, match="give baseline= or baseline_hyp=, not both"):
        evaluate([f"ckpt={last}", f"baseline={first}", f"baseline_hyp={alone}", *common])


def _mini_refs(mini):
    return (mini / "valid.de").read_text().split("\n")[:-1]


def test_moses_tokenisation_reproduces_the_multi30k_tok_files():
    """The published ``test_2016_flickr.lc.norm.tok.de`` lines 2 and 230, from the raw test2016.de."""
    from nmt.evaluate import moses_lowercase_tokenize

    raw = ["Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun.",
           'Ein Jugendlicher in einem schwarzen T-Shirt mit dem Aufdruck "Asian Pacific 2007" sitzt und spielt '
           "eine Trommel."]
    assert moses_lowercase_tokenize(raw, "de") == [
        "ein boston terrier läuft über saftig-grünes gras vor einem weißen zaun .",
        "ein jugendlicher in einem schwarzen t-shirt mit dem aufdruck &quot; asian pacific 2007 &quot; sitzt und "
        "spielt eine trommel ."]
    with pytest.raises(ValueError, match="language code"):
        moses_lowercase_tokenize(raw, "")


def test_moses_tokenized_bleu_is_lowercased_multi_bleu_on_moses_tokens():
    from nmt.evaluate import moses_tokenized_bleu

    refs = ["Ein Mann fährt ein Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau singt."]
    hyps = ["ein Mann fährt Fahrrad .", "Zwei hunde spielen im Schnee", "EINE FRAU SINGT."]
    got = moses_tokenized_bleu(hyps, refs, "de")
    expected = sacrebleu.corpus_bleu(
        ["ein mann fährt fahrrad .", "zwei hunde spielen im schnee", "eine frau singt ."],
        [["ein mann fährt ein fahrrad .", "zwei hunde spielen im schnee .", "eine frau singt ."]],
        tokenize="none", smooth_method="none")
    assert got["bleu_moses_lc"] == round(expected.score, 2) and 0 < got["bleu_moses_lc"] < 100
    assert (got["ref_len"], got["hyp_len"]) == (16, 14)
    assert got["bleu_moses_lc_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:none|smooth:none|")
    assert got["bleu_moses_lc_signature"].endswith(", de)") and "pre:lc+norm+tok(sacremoses" in got["bleu_moses_lc_signature"]
    assert moses_tokenized_bleu([r.upper() for r in refs], refs, "de")["bleu_moses_lc"] == 100.0
    with pytest.raises(ValueError, match="2 hypotheses but 3 references"):
        moses_tokenized_bleu(hyps[:2], refs, "de")


def test_moses_tokenized_bleu_gives_the_published_reference_length(multi30k_dir):
    """Wu et al. 2021's log for test2016 en→de says reflen=12103: the same references, the same tokens."""
    from nmt.evaluate import moses_tokenized_bleu

    refs = (multi30k_dir / "multi30k" / "test2016.de").read_text(encoding="utf-8").splitlines()
    got = moses_tokenized_bleu(refs, refs, "de")
    assert (got["ref_len"], got["bleu_moses_lc"]) == (12103, 100.0)


def test_cli_moses_bleu_column_and_missing_sacremoses(tmp_path, capsys, monkeypatch):
    import sys

    from nmt.cli.evaluate import evaluate
    from nmt.evaluate import moses_tokenized_bleu

    refs, good, _ = _synthetic(n=50)
    ref, hyp = _write(tmp_path / "ref.de", refs), _write(tmp_path / "hyp.de", good)
    result = evaluate([f"hyp={hyp}", f"ref={ref}", "moses_bleu=de"])
    out = capsys.readouterr().out
    (entry,) = result["sets"]
    assert entry["bleu_moses_lc"] == moses_tokenized_bleu(good, refs, "de")["bleu_moses_lc"]
    assert entry["moses_ref_len"] == sum(len(r.split()) for r in refs)
    assert "BLEU tok lc" in out.splitlines()[0] and "BLEU tok lc signature: " in out
    assert "bleu_moses_lc" in result["signatures"]
    with_baseline = evaluate([f"hyp={hyp}", f"baseline_hyp={ref}", f"ref={ref}", "moses_bleu=de",
                              "bootstrap_samples=20"])["sets"][0]
    assert with_baseline["baseline"]["bleu_moses_lc"] == 100.0
    assert with_baseline["bleu_moses_lc"] == entry["bleu_moses_lc"] < 100.0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "100.00"  # the baseline row's BLEU tok lc
    plain = evaluate([f"hyp={hyp}", f"ref={ref}"])
    assert "bleu_moses_lc" not in plain["sets"][0] and "BLEU tok lc" not in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "sacremoses", None)  # as if the moses extra were not installed
    with pytest.raises(SystemExit, match=r"error: moses_bleu=de: .*pip install -e '\.\[moses\]'"):
        evaluate([f"hyp={hyp}", f"ref={ref}", "moses_bleu=de"])


def test_sources_longer_than_the_model_takes_are_truncated_by_one_rule(caplog):
    """Issue 38: one rule for every decoder of sources (translation, evaluation, validation):
    the first ``max_positions - 1`` tokens, a warning naming the input line; an ensemble takes
    what its smallest member takes."""
    import dataclasses
    import logging

    import torch

    from nmt.config import ModelConfig
    from nmt.evaluate import source_limit, translate_ids
    from nmt.models import build_model
    from nmt.models.ensemble import Ensemble

    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1, dropout=0.0,
                      max_positions=8)
    model = build_model(cfg, 40, 40).eval()
    long, short = list(range(5, 25)), [5, 6, 7]
    assert source_limit(model) == 7
    with caplog.at_level(logging.WARNING, logger="nmt.evaluate"):
        got = translate_ids(model, [short, long], beam_size=2, max_len_b=3, first_line=10)
    assert "input line 11 has 20 tokens; truncated to 7" in caplog.text
    want = translate_ids(model, [short, long[:7]], beam_size=2, max_len_b=3)
    assert [h[0].tokens for h in got] == [h[0].tokens for h in want]
    wider = build_model(dataclasses.replace(cfg, max_positions=12), 40, 40)
    assert source_limit(Ensemble([wider, model])) == 7
