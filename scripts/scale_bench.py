"""Start-up of ``nmt-train`` on large plain-text corpora (``scripts/benchmark.py --scale N,N,...``).

For each size N it makes the corpus (``scripts/make_scale_corpus.py``, not timed), then starts the
Transformer recipe on it twice under ``/usr/bin/time -v``: first with an empty cache, then again
with the cache the first start wrote. Each start is timed from the process's start to the log
line of its first update (``train.log_every_steps=1``), then killed; ``/usr/bin/time`` reports the
whole process tree's peak RSS. Reported per N: both times, both peak RSS, the encoding rate (from
the cache's log line), the cache's bytes per pair and per id, and a least-squares line of time
and cache size against N.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["experiment=multi30k_transformer", "train.max_time_minutes=0", "train.fit_schedule_to_time=false",
             "train.log_every_steps=1", "train.max_steps=1000", "train.eval_test=false", "train.num_threads=2"]


def _start(data_dir: Path, cache: Path, run_dir: Path, timeout: float) -> dict:
    """One ``nmt-train`` start, until its first update: seconds, peak RSS (MB), log lines of interest."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "nmt.cli.train", *OVERRIDES, f"data.dir={data_dir}",
           f"data.tokenizer.cache_dir={cache}", f"hydra.run.dir={run_dir}", "name=scale"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=run_dir.parent,
                            start_new_session=True)
    lines, first_update = [], None
    for line in proc.stdout:
        lines.append(line)
        if first_update is None and re.search(r"\bstep 1 loss=", line):
            first_update = time.perf_counter() - start
            for pid in _children(proc.pid):
                os.kill(pid, signal.SIGKILL)
        if time.perf_counter() - start > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    text = "".join(lines)
    if first_update is None:
        raise RuntimeError(f"no first update within {timeout} s:\n{text[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    encode = re.search(r"encoded (\d+) pairs in ([\d.]+) s", text)
    return {"seconds_to_first_update": round(first_update, 1),
            "peak_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None,
            "encode_sentences_per_s": round(2 * int(encode.group(1)) / float(encode.group(2))) if encode else None,
            "log": [s.strip()[:240] for s in lines if re.search(r"sentencepiece|encoded|memory-mapped|trained", s)]}


def _children(pid: int) -> list[int]:
    """The processes under ``pid`` (``/usr/bin/time``'s child, nmt-train), deepest first."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    kids = [int(p) for p in out]
    return [g for k in kids for g in _children(k)] + kids


def _cache_bytes(cache: Path) -> tuple[int, dict]:
    folder = next((cache / "ids").glob("ids-*"))
    meta = json.loads((folder / "meta.json").read_text())
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return size, meta


def measure(sizes: list[int], work: Path, timeout: float = 1800) -> dict:
    """The benchmark for each size in ``sizes``; corpora and caches go under ``work`` (removed after)."""
    work.mkdir(parents=True, exist_ok=True)
    rows = {}
    for n in sizes:
        data, cache = work / f"corpus-{n}", work / f"cache-{n}"
        shutil.rmtree(cache, ignore_errors=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_scale_corpus.py"), str(n), "--out", str(data)],
                       check=True, capture_output=True)
        first = _start(data, cache, work / f"run-{n}", timeout)
        cached = _start(data, cache, work / f"run-{n}", timeout)
        size, meta = _cache_bytes(cache)
        tokens = meta["tokens"]["src"] + meta["tokens"]["tgt"]
        itemsize = np.dtype(meta["dtype"]).itemsize
        rows[str(n)] = {"first_start": first, "cached_start": cached, "pairs_kept": meta["pairs"],
                        "tokens": tokens, "id_dtype": meta["dtype"], "cache_bytes": size,
                        "cache_bytes_per_pair": round(size / n, 1),
                        "cache_over_token_bytes": round(size / (tokens * itemsize), 3),
                        "corpus_bytes": sum(f.stat().st_size for f in data.glob("train.*"))}
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    return {"sizes": rows, "slopes": _slopes(rows), "overrides": OVERRIDES}


def _slopes(rows: dict) -> dict:
    """Least-squares ``a + b·N`` of each cost over the sizes, with ``b`` per million pairs."""
    n = np.array([int(k) for k in rows], dtype=float)
    if len(n) < 2:
        return {}
    out = {}
    for name, get in (("first_start_s", lambda r: r["first_start"]["seconds_to_first_update"]),
                      ("cached_start_s", lambda r: r["cached_start"]["seconds_to_first_update"]),
                      ("first_start_peak_rss_mb", lambda r: r["first_start"]["peak_rss_mb"]),
                      ("cache_bytes", lambda r: r["cache_bytes"])):
        y = np.array([get(r) for r in rows.values()], dtype=float)
        b, a = np.polyfit(n, y, 1)
        out[name] = {"per_million_pairs": round(b * 1e6, 2), "intercept": round(a, 2),
                     "r2": round(1 - ((y - (a + b * n)) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12), 4)}
    return out
