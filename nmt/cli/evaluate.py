"""``nmt-evaluate``: decode test sets and score them with sacrebleu (BLEU, lowercased BLEU, chrF, TER),
optionally against a baseline with the paired bootstrap test (Koehn 2004; sacrebleu's implementation).

  nmt-evaluate ckpt=RUN                                   # the data config's test split
  nmt-evaluate ckpt=RUN split=test2016,valid src=a.en,b.en ref=a.de,b.de
  nmt-evaluate ckpt=RUN_A,RUN_B                           # an ensemble of two checkpoints
  nmt-evaluate ckpt=RUN_A baseline=RUN_B split=test2016   # A against B: bootstrap mean, 95% CI, p-value
  nmt-evaluate hyp=a.de baseline_hyp=b.de ref=test.de     # precomputed hypotheses
  nmt-evaluate ckpt=RUN moses_bleu=de                     # + BLEU on lowercased Moses tokens (papers' metric)

Lists are comma-separated. Prints one table (and one per metric signature), then the whole
result as one JSON line. Hypotheses are written to <run>/hyp.<set> (a baseline's to
<run>/hyp.baseline.<set>) unless output= names one file per set.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

from nmt.cli import comma_list, one_error_line

log = logging.getLogger("nmt.evaluate")

COLUMNS = (("bleu", "BLEU"), ("bleu_lc", "BLEU lc"), ("chrf", "chrF"), ("ter", "TER"))
MOSES_COLUMN = ("bleu_moses_lc", "BLEU tok lc")  # with moses_bleu=LANG (nmt.evaluate.moses_tokenized_bleu)


@dataclasses.dataclass
class TestSet:
    """One test set: sources (None when only hypotheses are scored) and references."""

    name: str
    src: Optional[list[str]]
    ref: list[str]
    ref_path: str  # for messages


@dataclasses.dataclass
class System:
    """A system to score: a (possibly ensembled) checkpoint or precomputed hypothesis files."""

    role: str  # "system" or "baseline"
    loaded: object = None  # LoadedModel
    hyp_files: Optional[list[str]] = None

    @property
    def description(self) -> str:
        if self.loaded is None:
            return ",".join(self.hyp_files or [])
        members = self.loaded.meta.get("ensemble")
        return ",".join(map(str, members)) if members else str(self.loaded.path)


@one_error_line
def main(argv: Optional[list[str]] = None) -> None:
    """Console script ``nmt-evaluate``."""
    evaluate(sys.argv[1:] if argv is None else argv)


def _system(role: str, ckpt: Optional[str], hyp: Optional[str], device: str) -> Optional[System]:
    """Load ``ckpt`` (a comma list: an ensemble) or take ``hyp`` files; None when neither is given."""
    from nmt.checkpoint import load_ensemble
    from nmt.checkpoint import CheckpointError

    names = ("ckpt", "hyp") if role == "system" else ("baseline", "baseline_hyp")
    if ckpt and hyp:
        raise SystemExit(f"error: give {names[0]}= or {names[1]}=, not both")
    if hyp:
        return System(role, hyp_files=comma_list(hyp))
    if not ckpt:
        return None
    try:
        return System(role, loaded=load_ensemble(comma_list(ckpt), device=device))
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None


def _test_sets(cfg, data_cfg) -> list[TestSet]:
    """The splits named in ``split=`` (default: the test split when no ``ref=`` is given), then the
    ``src=``/``ref=`` pairs.

    Raises:
        SystemExit: unequal numbers of src and ref files, unreadable or misaligned files.
    """
    from nmt.data.errors import DataError
    from nmt.data.splits import load_split
    from nmt.data.text import read_lines, read_parallel

    srcs, refs = comma_list(cfg.src), comma_list(cfg.ref)
    if srcs and len(srcs) != len(refs):
        raise SystemExit(f"error: src= names {len(srcs)} files ({', '.join(srcs)}) but ref= names {len(refs)} "
                         f"({', '.join(refs) or 'none'}); give one reference file per source file")
    splits = comma_list(cfg.split) or ([] if refs else [data_cfg.test_split])
    sets = []
    try:
        for split in splits:
            text = load_split(data_cfg, split)
            sets.append(TestSet(f"{split}.{data_cfg.tgt_lang}", text.src, text.tgt, text.name or split))
        for i, ref in enumerate(refs):
            if srcs:
                text = read_parallel(srcs[i], ref, drop_empty=False, name=srcs[i])
                sets.append(TestSet(Path(srcs[i]).name, text.src, text.tgt, ref))
            else:
                sets.append(TestSet(Path(ref).name, None, list(read_lines(ref)), ref))
    except DataError as err:
        raise SystemExit(f"error: {err}") from None
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: test sets with the same name ({', '.join(names)}): their hypothesis files would "
                         "overwrite each other; rename one")
    return sets


def inference_data(saved, data_dir: Optional[str], hf_name: Optional[str], needed: bool = True):
    """The data settings to read splits with: the checkpoint's languages and split names, the
    locations the user named (:func:`data_for_inference`, R30).

    Raises:
        SystemExit: the checkpoint's data came from the hub and the user named no dataset or folder.
    """
    if needed and saved.hf_name and not (hf_name or data_dir):
        raise SystemExit(f"error: the checkpoint was trained on the Hugging Face dataset {saved.hf_name!r}; a "
                         "checkpoint never chooses what is downloaded: pass hf_name=<dataset> (or data_dir=, or "
                         "src=/ref= files) to name the data yourself")
    return data_for_inference(saved, data_dir, hf_name)


def data_for_inference(saved, data_dir: Optional[str] = None, hf_name: Optional[str] = None):
    """A checkpoint's data settings with every location replaced by what the user named (R30).

    From the checkpoint come only the languages, split names and cleaning options (checked by
    :func:`nmt.config_checks.validate`). Its ``dir``, hub dataset, ``hf_data_files`` URLs,
    revision and cache folders are dropped, and nothing is downloaded: the files are read from
    ``data_dir``, else ``$NMT_DATA_DIR/<corpus>``, or from the hub dataset ``hf_name`` when the
    user names one.
    """
    from nmt.config import HFDataFiles

    tokenizer = dataclasses.replace(saved.tokenizer, cache_dir=None)
    return dataclasses.replace(saved, dir=data_dir, download=False, hf_name=hf_name or None, hf_revision=None,
                               hf_data_files=HFDataFiles(), hf_cache_dir=None, streaming=False, tokenizer=tokenizer,
                               hf_config=saved.hf_config if hf_name and hf_name == saved.hf_name else None)


def search_settings(loaded, beam_size: Optional[int] = None, length_penalty: Optional[float] = None) -> dict:
    """A checkpoint's search settings (``beam_size``, ``length_penalty``, ``max_len_a``,
    ``max_len_b``), with ``beam_size``/``length_penalty`` replaced when given."""
    sc = loaded.config.search
    return {"beam_size": beam_size or sc.beam_size, "max_len_a": sc.max_len_a, "max_len_b": sc.max_len_b,
            "length_penalty": sc.length_penalty if length_penalty is None else length_penalty}


def decode_best(loaded, model, sources: list[str], settings: dict, batch_size: int, device: str) -> list[str]:
    """Detokenised best hypotheses of ``model`` (``loaded.model`` or weights loaded into it) for
    ``sources``, with :func:`search_settings`; inputs longer than the model's positions are truncated."""
    from nmt.evaluate import translate_texts

    hyps = translate_texts(model, loaded.tokenizer, sources, batch_size=batch_size, device=device, **settings)
    return loaded.tokenizer.decode_tgt([h[0].tokens for h in hyps])


def run_dir_of(ckpt: Path) -> Optional[Path]:
    """The run directory of checkpoint ``ckpt`` (``RUN/checkpoints/NAME`` with the run's
    ``checkpoints.json``), or None for a stand-alone model folder, which nmt-evaluate never
    writes beside (R31)."""
    from nmt.checkpoint import INDEX

    folder = ckpt.parent
    return folder.parent if folder.name == "checkpoints" and (folder / INDEX).is_file() else None


def _hypotheses(system: System, sets: list[TestSet], cfg) -> list[dict]:
    """Per set: ``{"texts", "hypotheses" (file), "decode_seconds"}``; decodes with the checkpoint's
    search settings (and writes the files) or reads the given files.

    Raises:
        SystemExit: a hypothesis file count or line count that does not match the test sets.
    """
    from nmt.data.errors import DataError
    from nmt.data.text import read_lines
    from nmt.io import atomic_write_text, inside

    out = []
    if system.hyp_files is not None:
        files = system.hyp_files
        if len(files) != len(sets):
            raise SystemExit(f"error: {len(files)} {system.role} hypothesis files ({', '.join(files)}) for "
                             f"{len(sets)} test sets ({', '.join(s.name for s in sets)})")
        for path, test in zip(files, sets):
            try:
                texts = list(read_lines(path))
            except DataError as err:
                raise SystemExit(f"error: {err}") from None
            if len(texts) != len(test.ref):
                raise SystemExit(f"error: {path} has {len(texts)} lines but the references {test.ref_path} have "
                                 f"{len(test.ref)}; hypotheses must be aligned line by line with the references")
            out.append({"texts": texts, "hypotheses": path})
        return out
    outputs = comma_list(cfg.output) if system.role == "system" else []
    if outputs and len(outputs) != len(sets):
        raise SystemExit(f"error: output= names {len(outputs)} files for {len(sets)} test sets "
                         f"({', '.join(s.name for s in sets)})")
    run_dir = run_dir_of(Path(system.loaded.path))
    prefix = "hyp." if system.role == "system" else "hyp.baseline."
    settings = search_settings(system.loaded, cfg.beam_size, cfg.length_penalty)
    for i, test in enumerate(sets):
        if test.src is None:
            raise SystemExit(f"error: {test.ref_path} has no source file to decode: give src= with ref=")
        t0 = time.monotonic()
        texts = decode_best(system.loaded, system.loaded.model, test.src, settings, cfg.batch_size, cfg.device)
        path = Path(outputs[i]) if outputs else None
        if path is None and run_dir is not None:
            path = inside(run_dir, f"{prefix}{test.name}")  # test.name is a checked split and language
        if path is not None:
            atomic_write_text(path, "".join(t + "\n" for t in texts))
        out.append({"texts": texts, "hypotheses": None if path is None else str(path),
                    "decode_seconds": round(time.monotonic() - t0, 2)})
    if not outputs and run_dir is None:
        log.info("%s is not inside a run directory: hypotheses are not written (give output=FILE,...)",
                 system.loaded.path)
    return out


def _print_scores(rows: list[dict], signatures: dict) -> None:
    """The table of scores, then each metric's signature once."""
    columns = [c for c in (*COLUMNS, MOSES_COLUMN) if c[0] in signatures]
    width = max([len("set")] + [len(r["set"]) for r in rows])
    with_role = any("system" in r for r in rows)
    head = f"{'set':<{width}}  " + ("system    " if with_role else "") + f"{'sentences':>9}"
    widths = [max(7, len(label)) for _, label in columns]
    print(head + "".join(f"  {label:>{w}}" for (_, label), w in zip(columns, widths)))
    for r in rows:
        line = f"{r['set']:<{width}}  " + (f"{r['system']:<8}  " if with_role else "") + f"{r['sentences']:>9}"
        print(line + "".join(f"  {r[key]:>{w}.2f}" for (key, _), w in zip(columns, widths)))
    for key, label in columns:
        print(f"{label} signature: {signatures[key]}")


def _print_significance(results: list[dict]) -> None:
    """Per set: each system's score, bootstrap mean ± 95% CI and the p-value (* : p < 0.05)."""
    from nmt.evaluate import PAIRED_METRICS

    labels = dict(COLUMNS)
    width = max([len("set")] + [len(r["set"]) for r in results])
    print(f"\npaired bootstrap resampling ({results[0]['bootstrap_samples']} resamples): "
          "score (bootstrap mean ± 95% CI), p-value of the difference to the baseline\n"
          "(* p < 0.05; TER: lower is better)")
    print((f"{'set':<{width}}  system    " + "".join(f"  {labels[m]:<32}" for m in PAIRED_METRICS)).rstrip())
    for r in results:
        for role in ("baseline", "system"):
            cells = []
            for m in PAIRED_METRICS:
                s = r["significance"][m][role]
                cell = f"{s['score']:.2f} ({s['mean']:.2f} ± {s['ci']:.2f})"
                if role == "system":
                    cell += f" p={s['p_value']:.4f}" + ("*" if s["p_value"] < 0.05 else "")
                cells.append(f"  {cell:<32}")
            print((f"{r['set'] if role == 'baseline' else '':<{width}}  {role:<8}" + "".join(cells)).rstrip())
    for m in PAIRED_METRICS:
        print(f"{labels[m]} bootstrap signature: {results[0]['significance'][m]['signature']}")


def _score_sets(sets: list[TestSet], outputs: list[dict], base_outputs: Optional[list[dict]],
                bootstrap_samples: int, moses_lang: Optional[str] = None) -> tuple[list[dict], list[dict], dict]:
    """Per set: scores (and the baseline's and the paired bootstrap test when there is one), plus
    each system's Moses-tokenised lowercased BLEU when ``moses_lang`` is given.
    Returns (JSON entries, table rows, signatures by metric)."""
    from nmt.evaluate import moses_tokenized_bleu, paired_bootstrap, score_corpus

    def scored(texts: list[str], ref: list[str]) -> dict:
        """score_corpus, plus the Moses-tokenised BLEU, its signature and token counts when asked."""
        scores = score_corpus(texts, ref)
        if moses_lang:
            try:
                moses = moses_tokenized_bleu(texts, ref, moses_lang)
            except ImportError as err:
                raise SystemExit(f"error: moses_bleu={moses_lang}: {err}") from None
            key = MOSES_COLUMN[0]
            scores.update({key: moses[key], f"{key}_signature": moses[f"{key}_signature"],
                           "moses_ref_len": moses["ref_len"], "moses_hyp_len": moses["hyp_len"]})
        return scores

    metrics = [*COLUMNS, MOSES_COLUMN] if moses_lang else list(COLUMNS)
    entries, rows, signatures = [], [], {}
    for i, test in enumerate(sets):
        hyp = outputs[i]
        scores = scored(hyp["texts"], test.ref)
        signatures = {k: scores.pop(f"{k}_signature") for k, _ in metrics}
        entry = {"set": test.name, "sentences": len(test.ref), **scores,
                 **{k: v for k, v in hyp.items() if k != "texts"}}
        if base_outputs is not None:
            b = base_outputs[i]
            b_scores = scored(b["texts"], test.ref)
            entry["baseline"] = {**{k: v for k, v in b_scores.items() if not k.endswith("_signature")},
                                 **{k: v for k, v in b.items() if k != "texts"}}
            entry["bootstrap_samples"] = bootstrap_samples
            entry["significance"] = paired_bootstrap(hyp["texts"], b["texts"], test.ref, bootstrap_samples)
            rows.append({"set": test.name, "system": "baseline", "sentences": len(test.ref), **entry["baseline"]})
            rows.append({"set": "", "system": "system", "sentences": len(test.ref), **scores})
        else:
            rows.append({"set": test.name, "sentences": len(test.ref), **scores})
        entries.append(entry)
    return entries, rows, signatures


def evaluate(argv: list[str]) -> dict:
    """Run an evaluation from ``key=value`` arguments, print it and return the result dict."""
    from nmt.cli import parse_options
    from nmt.cli.options import EvaluateConfig
    from nmt.config import DataConfig

    cfg: Optional[EvaluateConfig] = parse_options(EvaluateConfig, __doc__, argv)
    if cfg is None:
        return {}
    system = _system("system", cfg.ckpt, cfg.hyp, cfg.device)
    if system is None:
        raise SystemExit("error: give ckpt=CHECKPOINT (a comma list for an ensemble) or hyp=FILES")
    baseline = _system("baseline", cfg.baseline, cfg.baseline_hyp, cfg.device)
    if baseline is not None and cfg.bootstrap_samples < 1:
        raise SystemExit(f"error: bootstrap_samples must be >= 1, got {cfg.bootstrap_samples}")
    first = next((s.loaded for s in (system, baseline) if s is not None and s.loaded is not None), None)
    data_cfg = inference_data(first.config.data if first is not None else DataConfig(), cfg.data_dir, cfg.hf_name,
                              needed=bool(comma_list(cfg.split)) or not cfg.ref)
    data_cfg = dataclasses.replace(data_cfg, max_test_pairs=None, max_valid_pairs=None)  # whole test sets
    sets = _test_sets(cfg, data_cfg)
    result: dict = {"system": system.description, "sets": []}
    if system.loaded is not None:
        result["search"] = search_settings(system.loaded, cfg.beam_size, cfg.length_penalty)
    if baseline is not None:
        result.update(baseline=baseline.description, bootstrap_samples=cfg.bootstrap_samples)
        if baseline.loaded is not None:
            result["baseline_search"] = search_settings(baseline.loaded, cfg.beam_size, cfg.length_penalty)
    outputs = _hypotheses(system, sets, cfg)
    base_outputs = _hypotheses(baseline, sets, cfg) if baseline is not None else None
    result["sets"], rows, result["signatures"] = _score_sets(sets, outputs, base_outputs, cfg.bootstrap_samples,
                                                                  cfg.moses_bleu)
    _print_scores(rows, result["signatures"])
    if base_outputs is not None:
        _print_significance(result["sets"])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
