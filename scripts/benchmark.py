#!/usr/bin/env python
"""Measure training and translation speed against the hardware limit; print one JSON object.

    python scripts/benchmark.py                                          # Transformer recipe, training only
    python scripts/benchmark.py --recipes multi30k_transformer,multi30k_rnn_bahdanau,multi30k_rnn_luong
    python scripts/benchmark.py --ckpt runs/<transformer run> --ckpt runs/<rnn run>   # + translation
    python scripts/benchmark.py --skip-training --ckpt runs/<run> --no-ct2            # translation only

What it reports (every part runs in its own subprocess, so each peak RSS is its own):

* ``matmul_peak_gflops``: median fp32 GFLOP/s of (4096x512) @ (512x2048) into a preallocated
  output with the configured threads (the kernel's limit); ``matmul_peak_gflops_fresh_output``
  is the same product into a new tensor each time (what a plain ``a @ b`` gets; on a 2-core VM
  page faults on the 32 MB output cost ~25%).
* ``training.<recipe>``: ``--repeats`` windows of ``--steps`` optimizer updates on real
  Multi30k batches after ``--warmup`` updates, through the trainer's own ``step``; median
  target and source tokens/s (real tokens, no padding), tokens per CPU-second (steadier on a
  shared machine), padding fraction of the batches (source + target slots), peak RSS.
  MFU = 6 x (P_enc x src_tok/s + (P_dec + P_out) x tgt_tok/s) / peak, where P_enc/P_dec are
  the encoder/decoder parameters without embeddings and P_out the output projection (tied or
  not): 2 FLOPs per parameter per token forward, 4 backward; attention score products, the
  softmax and elementwise work are not counted (the usual convention, Kaplan et al. 2020).
  ``mfu`` uses the preallocated peak, ``mfu_vs_fresh_output_peak`` the other.
* ``speedup_vs_baseline``: median tokens/s divided by ``--baseline`` (the first trainer's
  numbers measured with this script's method on the same machine; ``benchmarks/`` keeps one
  baseline per host, described in docs/performance.md).
  Only computed when this run's overrides equal the baseline entry's ``overrides`` (none unless
  given): a baseline entry measured on a model the recipe has since changed names the overrides
  that restore that model (the Transformer: ``model.ffn_dim=1024``, the recipe's earlier FFN),
  so ``python scripts/benchmark.py model.ffn_dim=1024`` compares the same computation; without
  them ``speedup_vs_baseline`` is null and ``speedup_note`` says why.
* ``translation.<run>``: beam search (``--beam-size``, batched by ``--batch-size``, sentences
  sorted by length) of the first ``--translate-sentences`` of test2016: sentences/s, target
  tokens/s, BLEU; for Transformers also CTranslate2 fp32 and int8 on the same model and
  threads (exported on the fly), and ``per_token_ms``: the time of one decoder step of a
  (batch x beam) batch with the cache, for outputs of 10, 20, 40 and 80 tokens (flat =
  linear total time).
* ``--scale 100000,1000000``: start-up on large corpora instead (``scripts/scale_bench.py``): for
  each size, time to the first update on a first and a cached start, peak RSS, encoding rate and
  cache bytes per pair, and the slope of each against the corpus size.
* ``cold_start``: wall time of ``nmt-translate ckpt=<first --ckpt> "<one sentence>"`` in a
  fresh interpreter (median of 3) and which heavy modules it imported.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HEAVY_MODULES = ("datasets", "tensorboard", "torch.utils.tensorboard", "matplotlib", "hydra")
BASELINE = ROOT / "benchmarks" / "baseline.json"


def matmul_peak_gflops(repeats: int = 15, fresh_output: bool = False) -> float:
    """Median fp32 GFLOP/s of (4096x512) @ (512x2048), into a preallocated or a fresh output."""
    import torch

    a, b = torch.randn(4096, 512), torch.randn(512, 2048)
    out = torch.empty(4096, 2048)

    def run():
        return a @ b if fresh_output else torch.mm(a, b, out=out)

    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 2 * 4096 * 512 * 2048 / statistics.median(times) / 1e9


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nmt.config import register_configs, to_config

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(hydra_compose(config_name="config", overrides=overrides))


def flop_params(model) -> tuple[int, int]:
    """(encoder params without embeddings, decoder params without embeddings + output projection)."""
    enc = sum(p.numel() for n, p in model.encoder.named_parameters() if "embed" not in n)
    dec = sum(p.numel() for n, p in model.decoder.named_parameters() if "embed" not in n)
    out = model.decoder.embed.weight.numel() if model.decoder.output_proj is None else 0
    return enc, dec + out


def bench_training(overrides: list[str], steps: int, warmup: int, repeats: int) -> dict:
    """Training throughput of one recipe (runs in a worker process)."""
    from nmt.train.data import prepare_data
    from nmt.train.trainer import Trainer

    import torch

    cfg = compose(overrides)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    data = prepare_data(cfg.data, seed=cfg.train.seed, with_test=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, data, Path(tmp))
        trainer.monitor.close()
        batches = iter(trainer.epoch_batches())

        def next_group():
            nonlocal batches
            group = []
            while len(group) < cfg.train.update_freq:
                try:
                    group.append(next(batches))
                except StopIteration:
                    trainer.sampler.set_epoch(trainer.sampler.state_dict()["epoch"] + 1)
                    batches = iter(trainer.epoch_batches())
            return group

        for _ in range(warmup):
            trainer.step(next_group())
        windows = []
        for _ in range(repeats):
            tgt = src = pad = slots = 0
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                group = next_group()
                stats = trainer.step(group)
                tgt += stats.tokens
                src += stats.src_tokens
                for b in group:
                    slots += b.src_tokens.numel() + b.tgt_out.numel()
                    pad += int((~b.src_mask).sum()) + int((b.tgt_out == 0).sum())
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            windows.append({"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
                            "tgt_tokens_per_s": round(tgt / seconds, 1), "src_tokens_per_s": round(src / seconds, 1),
                            "tgt_tokens_per_cpu_s": round(tgt / cpu, 1), "padding_fraction": round(pad / slots, 4)})
        enc_p, dec_p = flop_params(trainer.model)

        def med(key):
            return round(statistics.median(w[key] for w in windows), 1)

        return {"overrides": overrides, "num_params": trainer.num_params, "flop_params_encoder": enc_p,
                "flop_params_decoder_and_output": dec_p, "batches_per_epoch": len(trainer.sampler),
                "max_tokens": cfg.train.max_tokens, "threads": torch.get_num_threads(),
                "tgt_tokens_per_s": med("tgt_tokens_per_s"), "src_tokens_per_s": med("src_tokens_per_s"),
                "tgt_tokens_per_cpu_s": med("tgt_tokens_per_cpu_s"),
                "padding_fraction": round(statistics.median(w["padding_fraction"] for w in windows), 4),
                "model_gflops_per_s": round(6 * (enc_p * med("src_tokens_per_s") + dec_p * med("tgt_tokens_per_s"))
                                            / 1e9, 1),
                "peak_rss_mb": round(peak_rss_mb(), 1), "windows": windows}


def per_token_ms(model, tokenizer, texts: list[str], lengths: list[int], beam_size: int, batch_size: int,
                 repeats: int = 3) -> dict:
    """Milliseconds per decoder step (incremental, with the cache and a beam reorder per step)
    for a (batch x beam) batch forced to produce exactly L tokens, for each L in ``lengths``."""
    import torch

    from nmt.data.batch import BOS_ID, Batch

    batch = Batch.collate(tokenizer.encode_src(texts[:batch_size]))
    out = {}
    with torch.no_grad():
        enc = model.encode(batch.src_tokens, batch.src_lengths, batch.src_mask)
        rows = batch.size * beam_size
        start = model.init_state(enc).expand(beam_size)
        for length in lengths:
            times = []
            for _ in range(repeats):
                state, tokens = start, torch.full((rows, 1), BOS_ID, dtype=torch.long)
                t0 = time.perf_counter()
                for _ in range(length):
                    lprobs, _, state = model.step(tokens, state, need_attn=False)
                    top = lprobs.topk(1, dim=-1)  # what beam search does per step, minus bookkeeping
                    tokens = top.indices
                    state = state.index_select(torch.arange(rows))
                times.append((time.perf_counter() - t0) / length * 1000)
            out[str(length)] = round(statistics.median(times), 3)
    return {"batch_sentences": batch.size, "beam_size": beam_size, "ms_per_step": out,
            "ratio_80_to_10": round(out[str(lengths[-1])] / out[str(lengths[0])], 3)}


def bench_translation(ckpt: str, sentences: int, beam_size: int, batch_size: int, ct2: bool) -> dict:
    """Translation speed of one checkpoint (runs in a worker process)."""
    import torch

    from nmt.data.splits import load_split
    from nmt.evaluate import score_corpus, translate_texts
    from nmt.checkpoint import load_model

    loaded = load_model(ckpt)
    test = load_split(loaded.config.data, "test")
    src, refs = test.src[:sentences], test.tgt[:sentences]
    alpha = loaded.config.search.length_penalty
    t0 = time.perf_counter()
    hyps = translate_texts(loaded.model, loaded.tokenizer, src, beam_size=beam_size, batch_size=batch_size,
                           length_penalty=alpha, max_len_a=loaded.config.search.max_len_a,
                           max_len_b=loaded.config.search.max_len_b)
    seconds = time.perf_counter() - t0
    texts = loaded.tokenizer.decode_tgt([h[0].tokens for h in hyps])
    tokens = sum(len(h[0].tokens) + 1 for h in hyps)
    scores = score_corpus(texts, refs)
    result = {"checkpoint": str(loaded.path), "arch": loaded.config.model.arch, "sentences": len(src),
              "beam_size": beam_size, "batch_size": batch_size, "length_penalty": alpha,
              "threads": torch.get_num_threads(),
              "ours": {"seconds": round(seconds, 2), "sentences_per_s": round(len(src) / seconds, 1),
                       "tgt_tokens_per_s": round(tokens / seconds, 1), "bleu": scores["bleu"],
                       "peak_rss_mb": round(peak_rss_mb(), 1)}}
    if loaded.config.model.arch == "transformer":
        result["per_token_ms"] = per_token_ms(loaded.model, loaded.tokenizer, src, [10, 20, 40, 80], beam_size,
                                              batch_size)
    if ct2 and loaded.config.model.arch == "transformer":
        result.update(bench_ctranslate2(ckpt, src, refs, beam_size, batch_size, alpha, result["ours"]))
    return result


def bench_ctranslate2(ckpt: str, src: list[str], refs: list[str], beam_size: int, batch_size: int, alpha: float,
                      ours: dict) -> dict:
    """CTranslate2 fp32 and int8 on the same model, threads and beam; ratios of our speed to theirs."""
    import torch

    from nmt.evaluate import score_corpus
    from nmt.export.ctranslate2 import CT2Translator, export_ctranslate2

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for quant in ("float32", "int8"):
            model_dir = export_ctranslate2(ckpt, Path(tmp) / quant, quantization=None if quant == "float32" else quant)
            tr = CT2Translator(model_dir, intra_threads=torch.get_num_threads())
            tr.translate(src[:16], beam_size=beam_size, length_penalty=alpha)  # warm up
            t0 = time.perf_counter()
            res = tr.translate(src, beam_size=beam_size, length_penalty=alpha, batch_size=batch_size)
            seconds = time.perf_counter() - t0
            texts = [r[0][0] for r in res]
            tokens = sum(len(t) + 1 for t in tr.tokenizer.encode_src(texts))  # pieces of the output + EOS (approx.)
            out[f"ctranslate2_{quant}"] = {"seconds": round(seconds, 2), "sentences_per_s": round(len(src) / seconds, 1),
                                           "tgt_tokens_per_s": round(tokens / seconds, 1),
                                           "bleu": score_corpus(texts, refs)["bleu"]}
    out["ours_vs_ctranslate2_float32_speed"] = round(ours["sentences_per_s"] /
                                                     out["ctranslate2_float32"]["sentences_per_s"], 3)
    out["int8_bleu_change"] = round(out["ctranslate2_int8"]["bleu"] - out["ctranslate2_float32"]["bleu"], 2)
    return out


def cold_start(ckpt: str, repeats: int = 3) -> dict:
    """Wall time of nmt-translate for one sentence in a fresh interpreter, and heavy imports."""
    code = ("import sys, json\nfrom nmt.cli.translate import main\n"
            f"main(['ckpt={ckpt}', 'A man is riding a bike.'])\n"
            f"sys.stderr.write('\\nHEAVY=' + json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]) + '\\n')\n")
    times, heavy = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        heavy = json.loads(proc.stderr.rsplit("HEAVY=", 1)[1])
    return {"seconds_median": round(statistics.median(times), 2), "seconds": [round(t, 2) for t in times],
            "heavy_modules_imported": heavy, "output": proc.stdout.strip()}


def _worker(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every recipe")
    parser.add_argument("--recipes", default="multi30k_transformer", help="comma-separated experiment names")
    parser.add_argument("--steps", type=int, default=20, help="updates per timed window")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ckpt", action="append", default=[], help="benchmark translation with this run/checkpoint")
    parser.add_argument("--translate-sentences", type=int, default=1000)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--no-ct2", action="store_true", help="skip the CTranslate2 comparison")
    parser.add_argument("--no-cold-start", action="store_true")
    parser.add_argument("--baseline", type=Path, default=BASELINE,
                        help="JSON of the first trainer's speed measured on this machine (speedup_vs_baseline); "
                             "benchmarks/ keeps one per host (docs/performance.md)")
    parser.add_argument("--scale", default="", help="comma-separated corpus sizes in pairs: start-up time, peak RSS "
                        "and cache size of nmt-train on scripts/make_scale_corpus.py corpora (scripts/scale_bench.py)")
    parser.add_argument("--scale-dir", type=Path, default=Path("/tmp/nmt-scale"),
                        help="where --scale writes its corpora, caches and runs (removed per size when done)")
    parser.add_argument("--worker", choices=["train", "translate"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "train":
        print(json.dumps(bench_training(args.overrides, args.steps, args.warmup, args.repeats)))
        return
    if args.worker == "translate":
        print(json.dumps(bench_translation(args.ckpt[0], args.translate_sentences, args.beam_size, args.batch_size,
                                           ct2=not args.no_ct2)))
        return

    if args.scale:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from scale_bench import measure

        print(json.dumps(measure([int(n) for n in args.scale.split(",")], args.scale_dir), indent=2))
        return
    import torch

    peak = matmul_peak_gflops()
    peak_fresh = matmul_peak_gflops(fresh_output=True)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "matmul_peak_gflops": round(peak, 1), "matmul_peak_gflops_fresh_output": round(peak_fresh, 1),
              "mfu_formula": "6 * (P_enc * src_tok/s + (P_dec + P_out) * tgt_tok/s) / matmul_peak, embeddings "
                             "excluded, output projection included"}
    baseline = json.loads(args.baseline.read_text()) if args.baseline.exists() else {}
    if not args.skip_training:
        result["training"] = {}
        for recipe in [r for r in args.recipes.split(",") if r]:
            overrides = [f"experiment={recipe}", *args.overrides]
            t = _worker(["--worker", "train", "--steps", str(args.steps), "--warmup", str(args.warmup),
                         "--repeats", str(args.repeats), *overrides])
            t["mfu"] = round(t["model_gflops_per_s"] / peak, 3)
            t["mfu_vs_fresh_output_peak"] = round(t["model_gflops_per_s"] / peak_fresh, 3)
            base = baseline.get("training", {}).get(recipe)
            if base:
                base_overrides = list(base.get("overrides", []))
                if sorted(args.overrides) == sorted(base_overrides):
                    t["baseline_tgt_tokens_per_s"] = base["tgt_tokens_per_s"]
                    t["speedup_vs_baseline"] = round(t["tgt_tokens_per_s"] / base["tgt_tokens_per_s"], 3)
                else:
                    t["speedup_vs_baseline"] = None
                    t["speedup_note"] = (f"the baseline was measured with overrides {base_overrides}, this run with "
                                         f"{list(args.overrides)}: not the same computation")
            result["training"][recipe] = t
    if args.ckpt:
        result["translation"] = {}
        for ckpt in args.ckpt:
            extra = ["--no-ct2"] if args.no_ct2 else []
            result["translation"][Path(ckpt).name] = _worker(
                ["--worker", "translate", "--ckpt", ckpt, "--translate-sentences", str(args.translate_sentences),
                 "--beam-size", str(args.beam_size), "--batch-size", str(args.batch_size), *extra])
        if not args.no_cold_start:
            result["cold_start"] = cold_start(args.ckpt[0])
    if baseline:
        result["baseline"] = baseline
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
