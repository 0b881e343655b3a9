"""Translate a corpus and score it with sacrebleu (BLEU, lowercased BLEU, chrF, TER) with signatures;
paired bootstrap significance tests between two systems."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch

from nmt.data.batch import Batch
from nmt.search import Hypothesis, search

log = logging.getLogger(__name__)


def source_limit(model) -> Optional[int]:
    """The most source tokens ``model`` reads: ``model.max_positions - 1`` (the EOS the batch
    appends takes the last position), or None when it has no bound. An ensemble's is its
    smallest member's."""
    positions = getattr(model, "max_positions", None)
    return None if positions is None else positions - 1


def truncate_sources(src_ids: Sequence[Sequence[int]], limit: Optional[int], first_line: int = 1,
                     warn: bool = True) -> list[list[int]]:
    """The one rule for sources longer than a model takes, used by translation, evaluation,
    validation, the attention probes, ``nmt-align`` and the CTranslate2 engine: keep the first
    ``limit`` tokens, and warn naming the input line (``first_line`` is the 1-based line of
    ``src_ids[0]``). ``limit`` None keeps everything."""
    out = []
    for n, ids in enumerate(src_ids):
        ids = list(ids)
        if limit is not None and len(ids) > limit:
            if warn:
                log.warning("input line %d has %d tokens; truncated to %d", first_line + n, len(ids), limit)
            ids = ids[:limit]
        out.append(ids)
    return out


def translate_ids(model, src_ids: Sequence[Sequence[int]], beam_size: int = 5, length_penalty: float = 1.0,
                  max_len_a: float = 1.2, max_len_b: int = 10, nbest: int = 1, batch_size: int = 64,
                  need_attn: bool = False, device: str | torch.device = "cpu",
                  first_line: int = 1) -> list[list[Hypothesis]]:
    """Decode id sequences in length-sorted batches and return hypotheses in input order.

    Empty inputs are not decoded and get one empty hypothesis (R25). Inputs longer than the
    model takes are truncated with a warning (:func:`truncate_sources`; ``first_line``: the
    1-based input line of ``src_ids[0]``, for the warning).
    """
    src_ids = truncate_sources(src_ids, source_limit(model), first_line)
    results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0, None)] for _ in src_ids]
    todo = [i for i, s in enumerate(src_ids) if len(s) > 0]
    todo.sort(key=lambda i: len(src_ids[i]))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            batch = Batch.collate([src_ids[i] for i in chunk], indices=chunk).to(device)
            hyps = search(model, batch, beam_size=beam_size, length_penalty=length_penalty, max_len_a=max_len_a,
                          max_len_b=max_len_b, nbest=nbest, need_attn=need_attn)
            for i, h in zip(chunk, hyps):
                results[i] = h
    finally:
        model.train(was_training)
    return results


def translate_texts(model, tokenizer, texts: Sequence[str], **kwargs) -> list[list[Hypothesis]]:
    """Encode ``texts`` with the source tokenizer and call :func:`translate_ids`."""
    return translate_ids(model, tokenizer.encode_src(list(texts)), **kwargs)


def corpus_metrics() -> dict:
    """The corpus metrics every evaluation reports, as fresh sacrebleu objects keyed by result name:
    ``bleu`` (13a, cased), ``bleu_lc`` (lowercased), ``chrf`` (chrF2, Popović 2015) and ``ter``
    (Snover et al. 2006, sacrebleu's tercom-compatible defaults)."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    return {"bleu": BLEU(), "bleu_lc": BLEU(lowercase=True), "chrf": CHRF(), "ter": TER()}


def _check_counts(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")


def score_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """sacrebleu BLEU (13a, cased), lowercased BLEU, chrF and TER on detokenised text (R29).

    Returns a dict with ``bleu``, ``bleu_lc``, ``chrf``, ``ter`` (all in 0-100, rounded to 2
    decimals; TER is an error rate: lower is better) and their ``*_signature`` strings.

    Raises:
        ValueError: when the numbers of hypotheses and references differ.
    """
    _check_counts(hypotheses, references)
    hyps, refs = list(hypotheses), [list(references)]
    out = {}
    for key, metric in corpus_metrics().items():
        out[key] = round(metric.corpus_score(hyps, refs).score, 2)
        out[f"{key}_signature"] = str(metric.get_signature())
    return out


def moses_tokenized_bleu(hypotheses: Sequence[str], references: Sequence[str], lang: str) -> dict:
    """Lowercased BLEU on Moses-normalised, Moses-tokenised text: the BLEU of the Multi30k literature.

    The WMT16-18 multimodal translation tasks distribute Multi30k as ``*.lc.norm.tok.*`` files
    (lowercased, ``normalize-punctuation.perl``, ``tokenizer.perl`` without ``-a``) and papers
    score them with ``multi-bleu.perl`` or fairseq's BLEU4 on that tokenisation (e.g. Wu et al.
    2021, whose 41.02 on test2016 en→de reports ``reflen=12103``). This applies the same steps
    to detokenised hypotheses and references with sacremoses (lowercase, ``MosesPunctNormalizer``,
    ``MosesTokenizer`` with XML escaping and no aggressive hyphen splitting), then scores with
    sacrebleu on the given tokens (``tokenize="none"``, no smoothing, as ``multi-bleu.perl``).
    On the shared Multi30k test2016 German references it yields the papers' 12,103 tokens. It
    is not comparable with sacreBLEU's 13a scores (:func:`score_corpus`), which remain the
    project's metric; use this one only to compare with numbers published on tokenised text.

    Args:
        hypotheses, references: one detokenised line per sentence each.
        lang: the target language code for the Moses rules (``de``, ``en``, ``fr``, ...).
    Returns:
        ``{"bleu_moses_lc": score in 0-100 (2 decimals), "bleu_moses_lc_signature": str,
        "ref_len": reference tokens, "hyp_len": hypothesis tokens}``.
    Raises:
        ValueError: unequal numbers of lines or an empty ``lang``.
        ImportError: sacremoses is not installed (the ``moses`` extra).
    """
    from importlib.metadata import version

    from sacrebleu.metrics import BLEU

    _check_counts(hypotheses, references)
    hyps, refs = moses_lowercase_tokenize(hypotheses, lang), moses_lowercase_tokenize(references, lang)
    metric = BLEU(tokenize="none", smooth_method="none", force=True)
    score = metric.corpus_score(hyps, [refs])
    moses = f"sacremoses {version('sacremoses')}, {lang}"
    return {"bleu_moses_lc": round(score.score, 2),
            "bleu_moses_lc_signature": f"{metric.get_signature()}|pre:lc+norm+tok({moses})",
            "ref_len": score.ref_len, "hyp_len": score.sys_len}


def moses_lowercase_tokenize(lines: Sequence[str], lang: str) -> list[str]:
    """Lines as the Multi30k ``*.lc.norm.tok.*`` files have them: lowercased, punctuation
    normalised and Moses-tokenised (sacremoses; XML escaping on, hyphens kept inside words).

    Raises:
        ValueError: an empty ``lang``.
        ImportError: sacremoses is not installed (the ``moses`` extra).
    """
    if not lang:
        raise ValueError("Moses tokenisation needs the language code (e.g. 'de')")
    try:
        from sacremoses import MosesPunctNormalizer, MosesTokenizer
    except ImportError as err:
        raise ImportError("Moses-tokenised BLEU needs sacremoses: pip install -e '.[moses]'") from err
    normalizer, tokenizer = MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)
    return [tokenizer.tokenize(normalizer.normalize(line.strip().lower()), escape=True,
                               aggressive_dash_splits=False, return_str=True) for line in lines]


PAIRED_METRICS = ("bleu", "chrf", "ter")


def paired_bootstrap(hypotheses: Sequence[str], baseline: Sequence[str], references: Sequence[str],
                     n_samples: int = 1000, metrics: Sequence[str] = PAIRED_METRICS) -> dict:
    """Paired bootstrap resampling (Koehn 2004) of a system against a baseline, with sacrebleu's
    implementation (``sacrebleu.significance.PairedTest``, ``test_type="bs"``, as ``sacrebleu
    --paired-bs``): both systems are scored on the same ``n_samples`` resamples of the sentences
    (seed 12345, or ``$SACREBLEU_SEED``).

    Args:
        hypotheses, baseline, references: one detokenised line per sentence each.
        n_samples: bootstrap resamples (sacrebleu's default 1000).
        metrics: names from :func:`corpus_metrics`.

    Returns:
        ``{metric: {"system": {"score", "mean", "ci", "p_value"}, "baseline": {"score", "mean",
        "ci"}, "signature": str}}`` where ``mean`` and ``ci`` are the bootstrap mean and the
        half-width of its 95% confidence interval, and ``p_value`` is the probability of a
        difference at least as large as the observed one under the null hypothesis (two-sided).
        Identical hypothesis lists get ``p_value = 1.0``: sacrebleu's test yields ``1/(n+1)`` there
        because every resampled difference is exactly 0 and its count uses a strict ``>``.

    Raises:
        ValueError: unequal numbers of lines, ``n_samples < 1`` or an unknown metric name.
    """
    from sacrebleu.significance import PairedTest

    _check_counts(hypotheses, references)
    _check_counts(baseline, references)
    if n_samples < 1:
        raise ValueError(f"bootstrap samples must be >= 1, got {n_samples}")
    available = corpus_metrics()
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {sorted(available)}")
    identical = list(hypotheses) == list(baseline)
    out = {}
    for key in metrics:  # one test per metric: sacrebleu keys results by metric name (BLEU twice would clash)
        test = PairedTest([("baseline", list(baseline)), ("system", list(hypotheses))], {key: available[key]},
                          references=[list(references)], test_type="bs", n_samples=n_samples)
        signatures, scores = test()
        (name, signature), = signatures.items()
        base, system = scores[name]
        out[key] = {"system": {"score": round(system.score, 2), "mean": round(float(system.mean), 2),
                               "ci": round(float(system.ci), 2),
                               "p_value": 1.0 if identical else round(float(system.p_value), 4)},
                    "baseline": {"score": round(base.score, 2), "mean": round(float(base.mean), 2),
                                 "ci": round(float(base.ci), 2)},
                    "signature": str(signature)}
    return out
