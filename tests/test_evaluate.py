"""BLEU/chrF guardrails (RELIABILITY.md R29)."""
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
