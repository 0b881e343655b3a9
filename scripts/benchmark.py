#!/usr/bin/env python
"""Measure training throughput, peak memory and (optionally) translation speed; print JSON.

    python scripts/benchmark.py                                   # experiment=multi30k_transformer
    python scripts/benchmark.py --steps 40 --repeats 5 model.d_model=512
    python scripts/benchmark.py --ckpt runs/<run> --translate-sentences 1000

Training: ``--repeats`` windows of ``--steps`` optimizer updates on real Multi30k batches (after
``--warmup`` updates); the JSON gives the median and every window. Tokens are real (non-pad)
tokens. Model FLOPs utilisation (MFU) counts 6 FLOPs per parameter per token it touches
(forward 2, backward 4): encoder parameters per source token, decoder parameters (embeddings
excluded) plus the output projection per target token; attention score products are not
counted. The peak is a measured fp32 matmul at an NMT shape, on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def matmul_peak_gflops(repeats: int = 10) -> float:
    """Median fp32 GFLOP/s of (4096x512) @ (512x2048)."""
    import torch

    a, b = torch.randn(4096, 512), torch.randn(512, 2048)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
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


def bench_training(cfg, steps: int, warmup: int, repeats: int) -> dict:
    from nmt.train.data import prepare_data
    from nmt.train.trainer import Trainer

    data = prepare_data(cfg.data, seed=cfg.train.seed, with_test=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, data, Path(tmp))
        trainer.monitor.close()
        batches = iter(trainer._epoch_batches())

        def next_group():
            nonlocal batches
            group = []
            while len(group) < cfg.train.update_freq:
                try:
                    group.append(next(batches))
                except StopIteration:
                    trainer.sampler.set_epoch(trainer.sampler.state_dict()["epoch"] + 1)
                    batches = iter(trainer._epoch_batches())
            return group

        for _ in range(warmup):
            trainer._update(next_group())
        windows = []
        for _ in range(repeats):
            tgt = src = pad = slots = 0
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                group = next_group()
                stats = trainer._update(group)
                tgt += stats["tokens"]
                src += stats["src_tokens"]
                for b in group:
                    slots += b.src_tokens.numel() + b.tgt_out.numel()
                    pad += int((~b.src_mask).sum()) + int((b.tgt_out == 0).sum())
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            windows.append({"seconds": seconds, "cpu_seconds": cpu, "tgt_tokens_per_s": tgt / seconds,
                            "src_tokens_per_s": src / seconds, "tgt_tokens_per_cpu_s": tgt / cpu,
                            "padding_fraction": pad / slots})
        enc_p, dec_p = flop_params(trainer.model)
        med = statistics.median(w["tgt_tokens_per_s"] for w in windows)
        med_src = statistics.median(w["src_tokens_per_s"] for w in windows)
        return {"num_params": trainer.num_params, "flop_params_encoder": enc_p, "flop_params_decoder_and_output": dec_p,
                "batches_per_epoch": len(trainer.sampler), "max_tokens": cfg.train.max_tokens,
                "tgt_tokens_per_s_median": round(med, 1), "src_tokens_per_s_median": round(med_src, 1),
                "model_gflops_per_s": round(6 * (enc_p * med_src + dec_p * med) / 1e9, 1),
                "windows": windows}


def bench_translation(ckpt: str, sentences: int, beam_size: int, batch_size: int) -> dict:
    from nmt.data.corpus import load_split
    from nmt.evaluate import translate_texts
    from nmt.train.checkpoint import load_model

    loaded = load_model(ckpt)
    test = load_split(loaded.config.data, "test")
    src = test.src[:sentences]
    t0 = time.perf_counter()
    hyps = translate_texts(loaded.model, loaded.tokenizer, src, beam_size=beam_size, batch_size=batch_size,
                           length_penalty=loaded.config.search.length_penalty)
    seconds = time.perf_counter() - t0
    tokens = sum(len(h[0].tokens) + 1 for h in hyps)
    return {"checkpoint": str(loaded.path), "sentences": len(src), "beam_size": beam_size,
            "batch_size": batch_size, "seconds": round(seconds, 2), "sentences_per_s": round(len(src) / seconds, 1),
            "tgt_tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default experiment=multi30k_transformer)")
    parser.add_argument("--steps", type=int, default=30, help="updates per timed window")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ckpt", help="also benchmark beam-search translation of test2016 with this checkpoint")
    parser.add_argument("--translate-sentences", type=int, default=1000)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()

    import torch

    overrides = args.overrides or ["experiment=multi30k_transformer"]
    if not any(o.startswith("experiment=") for o in overrides):
        overrides = ["experiment=multi30k_transformer", *overrides]
    cfg = compose(overrides)
    result = {"overrides": overrides, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "matmul_peak_gflops": round(matmul_peak_gflops(), 1)}
    if not args.skip_training:
        result["training"] = bench_training(cfg, args.steps, args.warmup, args.repeats)
        result["training"]["mfu"] = round(result["training"]["model_gflops_per_s"] / result["matmul_peak_gflops"], 3)
        result["training"]["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if args.ckpt:
        result["translation"] = bench_translation(args.ckpt, args.translate_sentences, args.beam_size,
                                                  args.batch_size)
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
