"""A checkpoint from a stranger, through every console script (RELIABILITY.md R12, R30, R31).

A malicious model folder (interpolations, path traversal in string fields, huge sizes, a
swapped tokenizer, a ``checkpoints.json`` pointing outside, data locations on a web server) is
given to nmt-translate, nmt-evaluate, nmt-average, nmt-align and nmt-export. Each must exit
non-zero with one ``error:`` line, write nothing outside its output folder, make no network
request (a local HTTP server, also set as proxy and Hugging Face endpoint, records none), leak
no secret from the environment, and allocate under 200 MB more than translating with a good model.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from test_cli_e2e import _script

SECRET = "s3cr3t-4ws-k3y-do-not-leak"
TEXT = [f"the {a} {b} walks to the {c} near the river" for a in ("old", "young", "tall", "small", "happy")
        for b in ("man", "woman", "dog", "child") for c in ("house", "park", "bridge")]
MEMORY_LIMIT = 8 << 30  # address space of each run: a regression fails here instead of exhausting the machine


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def _record(self):
        type(self).requests.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"translation": {"en": "a", "de": "b"}}\n')

    do_GET = do_HEAD = do_POST = do_CONNECT = _record

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    _Recorder.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A real, loadable run with two tiny Transformer checkpoints (random weights), and a second
    sentencepiece model for the swapped-tokenizer attack."""
    from nmt.config import Config, DataConfig, ModelConfig, TokenizerConfig
    from nmt.data.tokenizer import train_tokenizer
    from nmt.models import build_model
    from nmt.train.checkpoint import save_checkpoint, write_index

    base = tmp_path_factory.mktemp("adversarial")
    options = TokenizerConfig(vocab_size=60, byte_fallback=False)
    tok = train_tokenizer(TEXT, TEXT, options, None)
    other = train_tokenizer([t.upper() for t in TEXT], [t.upper() for t in TEXT], options, None)
    cfg = Config(model=ModelConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1,
                                   max_positions=64), data=DataConfig(max_len=50))
    root = base / "run" / "checkpoints"
    for step in (1, 2):
        model = build_model(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size)
        save_checkpoint(root, f"step-{step:07d}", model, cfg, tok, {"step": step, "valid": {"bleu": float(step)}})
    write_index(root, {"latest": "step-0000002", "best": "step-0000002", "best_bleu": 2.0})
    (base / "other.spm.model").write_bytes(other.to_bytes()["spm.model"])
    return base


def _sandbox(good_run: Path, tmp_path: Path, attack: str, server: str) -> Path:
    """``tmp_path/box``: a home with a .bashrc, data files, and the run with ``attack`` applied."""
    box = tmp_path / "box"
    (box / "home").mkdir(parents=True)
    (box / "home" / ".bashrc").write_text("# the user's shell setup\n")
    (box / "data" / "multi30k").mkdir(parents=True)
    for split in ("valid", "test2016"):
        for lang in ("en", "de"):
            (box / "data" / "multi30k" / f"{split}.{lang}").write_text("\n".join(TEXT[:4]) + "\n")
    (box / "in.en").write_text("the old man walks\n")
    shutil.copytree(good_run / "run", box / "run")
    root = box / "run" / "checkpoints"
    cfg_path = root / "step-0000002" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    if attack == "interpolation":
        cfg["data"].update(tgt_lang="/../../../..${oc.env:HOME}/.bashrc", dir="${oc.env:SECRET_TOKEN}")
    elif attack == "traversal":
        cfg["data"].update(tgt_lang="../../home/.bashrc", test_split="../../../home/x", corpus="../..",
                           valid_split="../v")
    elif attack == "huge_bound":
        cfg["model"].update(max_positions=10**9, d_model=2**20)
    elif attack == "huge_header":  # in bounds, but the weights file does not back it: 33 GB if built
        cfg["model"].update(ffn_dim=262144, encoder_layers=1000)
    elif attack == "swapped_tokenizer":
        shutil.copy(good_run / "other.spm.model", root / "step-0000002" / "spm.model")
    elif attack == "index_outside":
        outside = box / "home" / "victim"
        shutil.copytree(root / "step-0000002", outside)  # loadable: following the index would "work"
        for c in root.glob("step-*"):
            (c / "COMPLETE").unlink()
        (root / "checkpoints.json").write_text(json.dumps({"best": "../../home/victim", "latest": "/etc"}))
    elif attack in ("hf_url", "hf_hub"):
        cfg["data"].update(hf_name="json" if attack == "hf_url" else "someone/evil-dataset",
                           hf_data_files={"train": None, "validation": f"{server}/valid.jsonl",
                                          "test": f"{server}/test.jsonl"})
    if attack in ("hf_url", "hf_hub"):  # the model itself is fine: only its data settings are hostile
        for c in root.glob("step-*"):
            (c / "config.yaml").write_text(yaml.safe_dump(cfg))
    else:
        cfg_path.write_text(yaml.safe_dump(cfg))
    return box


def _snapshot(box: Path) -> dict:
    return {str(p.relative_to(box)): (p.stat().st_size, p.stat().st_mtime_ns) for p in box.rglob("*")
            if not p.is_dir()}


def _commands(box: Path) -> dict[str, list[str]]:
    run, best = box / "run", box / "run" / "checkpoints" / "step-0000002"
    return {
        "nmt-translate": [f"ckpt={run}", f"input={box / 'in.en'}", f"output={box / 'out' / 'hyp.txt'}"],
        "nmt-evaluate": [f"ckpt={run}", "split=test2016"],
        "nmt-average": [f"run={run}", "n=2", "by=last"],
        "nmt-align": [f"ckpt={best}", f"src={box / 'in.en'}", f"tgt={box / 'in.en'}", f"output={box / 'out' / 'a.txt'}"],
        "nmt-export": [f"ckpt={best}", f"out={box / 'out' / 'ct2'}"],
    }


def _run_limited(script: str, args: list[str], box: Path, server: str) -> tuple[int, str, str, int]:
    """Run a console script in ``box`` with a hostile environment; returns (exit status, stdout,
    stderr, peak RSS in KiB)."""
    env = dict(os.environ, HOME=str(box / "home"), SECRET_TOKEN=SECRET, NMT_DATA_DIR=str(box / "data"),
               HF_ENDPOINT=server, HF_HOME=str(box / "home" / ".cache" / "hf"), HTTP_PROXY=server,
               HTTPS_PROXY=server, http_proxy=server, https_proxy=server, NO_PROXY="", no_proxy="",
               OMP_NUM_THREADS="1")  # two of these run at once on two cores
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_DATASETS_OFFLINE", None)
    out, err = box.parent / f"{script}.out", box.parent / f"{script}.err"
    with open(out, "w") as o, open(err, "w") as e:
        # bash sets the limit and execs the script (same pid, so wait4 reports the script's usage);
        # preexec_fn is unsafe with the threads that run two of these at once
        command = ["bash", "-c", f'ulimit -v {MEMORY_LIMIT // 1024} && exec "$0" "$@"', _script(script), *args]
        proc = subprocess.Popen(command, stdout=o, stderr=e, env=env, cwd=box, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out.read_text(), err.read_text(), usage.ru_maxrss


@pytest.fixture(scope="module")
def baseline_rss(good_run, tmp_path_factory, server) -> int:
    """Peak RSS (KiB) of translating one line with the good model: imports and a model."""
    box = _sandbox(good_run, tmp_path_factory.mktemp("baseline"), "none", server)
    code, out, err, rss = _run_limited("nmt-translate", [f"ckpt={box / 'run'}", "the old man walks"], box, server)
    assert code == 0 and out.count("\n") == 1, err
    return rss


def _check(box: Path, script: str, result, before: dict, baseline: int, server_requests: list) -> None:
    code, out, err, rss = result
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0, f"{script} accepted the malicious checkpoint:\n{out}\n{err}"
    assert len(errors) == 1, f"{script}: expected one error: line, got:\n{err[-3000:]}"
    assert "Traceback" not in err and SECRET not in out + err
    after = _snapshot(box)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k) and not k.startswith("out/")}
    assert not changed, f"{script} wrote outside its output folder: {sorted(changed)}"
    assert (box / "home" / ".bashrc").read_text() == "# the user's shell setup\n"
    assert not server_requests, f"{script} made network requests: {server_requests}"
    assert rss - baseline < 200 * 1024, f"{script} peaked at {rss // 1024} MB, {(rss - baseline) // 1024} MB more " \
                                        "than translating with a good model"


def _attack(good_run, tmp_path, server, attack: str, scripts: list[str]) -> tuple[Path, dict, list]:
    box = _sandbox(good_run, tmp_path, attack, server)
    commands = _commands(box)
    _Recorder.requests.clear()
    before = _snapshot(box)
    with ThreadPoolExecutor(2) as pool:  # independent processes; nothing here is timed
        results = list(pool.map(lambda s: (s, _run_limited(s, commands[s], box, server)), scripts))
    return box, before, results


ALL = ["nmt-translate", "nmt-evaluate", "nmt-average", "nmt-align", "nmt-export"]


@pytest.mark.parametrize("attack, scripts", [
    ("interpolation", ALL),  # ${oc.env:...}: a secret out, ~/.bashrc overwritten by the hypotheses
    ("traversal", ["nmt-evaluate", "nmt-translate"]),  # ../ in language, split and corpus names
    ("huge_bound", ["nmt-translate"]),  # sizes beyond any model: refused before anything is built
    ("huge_header", ["nmt-translate", "nmt-average"]),  # sizes the weights file does not back
    ("swapped_tokenizer", ["nmt-translate", "nmt-export"]),  # R12: the sha256 in meta.json
    ("index_outside", ["nmt-translate", "nmt-evaluate"]),  # checkpoints.json naming ../../home/victim
    ("hf_url", ["nmt-evaluate", "nmt-average"]),  # hf_data_files on a web server
    ("hf_hub", ["nmt-evaluate"]),  # a hub dataset the checkpoint names
])
def test_a_malicious_checkpoint_is_refused_by_every_console_script(good_run, tmp_path, server, baseline_rss,
                                                                    attack, scripts):
    """R12, R30, R31: one error: line, non-zero, nothing written outside the output folder, no
    network request, no secret leaked, under 200 MB more than a good model."""
    box, before, results = _attack(good_run, tmp_path, server, attack, scripts)
    for script, result in results:
        _check(box, script, result, before, baseline_rss, _Recorder.requests)


def test_the_user_can_still_name_the_data_of_a_hub_trained_model(good_run, tmp_path, server):
    """R30: a checkpoint never chooses what is fetched, but the user can: with src=/ref= files the
    hub-trained model above is evaluated normally, and hypotheses of a stand-alone model folder
    are not written two levels above it (issue 36 C16)."""
    box = _sandbox(good_run, tmp_path, "hf_hub", server)
    alone = box / "models" / "en-de"
    shutil.copytree(box / "run" / "checkpoints" / "step-0000002", alone)
    before = _snapshot(box)
    code, out, err, _ = _run_limited("nmt-evaluate", [f"ckpt={alone}", f"src={box / 'in.en'}",
                                                      f"ref={box / 'in.en'}"], box, server)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["sets"][0]["hypotheses"] is None
    assert _snapshot(box) == before and not _Recorder.requests
