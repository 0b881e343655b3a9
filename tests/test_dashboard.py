"""The Attention dashboard's data and server side (issue 37): the records the trainer writes,
the plugin's routes on event files of real (tiny) training runs, a real ``tensorboard`` on both
data paths, probe files with gold links, and ``nmt-translate``/``nmt-align`` writing records."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch
from werkzeug.test import Client

from dashboard_runs import RNN, TRANSFORMER, start_tensorboard, train_run, wait_for_data
from nmt.tensorboard.records import KINDS, PLUGIN_NAME, parse_tag, tag


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A Transformer (3+3 layers, 4 heads) and a BiRNN with local-p attention, 12 validations
    each (more than the 10 samples TensorBoard keeps of one tag), and a probe file with gold
    links for the RNN."""
    root = tmp_path_factory.mktemp("dashboard")
    probe = root / "probe.tsv"
    probe.write_text("3 1 4\t4 1 3\t0-2 1-1 2?0\n5 9 2 6\t6 2 9 5\t0-3 3-0\n", encoding="utf-8")
    out = {"transformer": train_run(root / "logs" / "transformer", TRANSFORMER, validations=12),
           "rnn": train_run(root / "logs" / "rnn", RNN, validations=12, probe=str(probe))}
    return root, out


def _client(logdir):
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as event_multiplexer
    from tensorboard.plugins import base_plugin

    from nmt.tensorboard.plugin import AttentionPlugin

    multiplexer = event_multiplexer.EventMultiplexer()  # TensorBoard's default: 10 tensor samples per tag
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    plugin = AttentionPlugin(base_plugin.TBContext(logdir=str(logdir), data_provider=provider,
                                                   multiplexer=multiplexer))
    apps = plugin.get_plugin_apps()

    def get(route, **args):
        query = "&".join(f"{k}={v}" for k, v in args.items())
        app = apps["/static/*"] if route.startswith("/static/") else apps[route]
        response = Client(app).get(f"/data/plugin/{PLUGIN_NAME}{route}?{query}")
        return response.status_code, response.get_data()

    return plugin, get


def _matrix(entry) -> np.ndarray:
    return np.frombuffer(base64.b64decode(entry["data"]), dtype="<f2").reshape(entry["shape"])


def test_the_trainer_writes_a_record_per_probe_sentence_and_validation(runs):
    """Every validation writes one record per probe sentence: pieces, word spans, the search's
    hypothesis and score, the reference and chrF; Transformer: every kind, [layers, heads, ., .]."""
    _, out = runs
    trainer, results, written = out["transformer"]
    steps = [h["step"] for h in results["history"]]
    assert len(steps) == 12 and len(written) == 12 * 8
    assert sorted({(r.sentence, r.step) for r in written}) == sorted((i, s) for i in range(8) for s in steps)
    best = [r for r in written if r.step == results["best_step"]]  # the model holds the best checkpoint now
    hyps = trainer.validator.decode_hypotheses(trainer.data.valid.src[:8])
    for record, hyp in zip(sorted(best, key=lambda r: r.sentence), hyps):
        assert record.hypothesis == trainer.data.tokenizer.decode_tgt([hyp.tokens])[0]
        assert record.score == pytest.approx(hyp.score, abs=1e-4) and record.search == {"beam_size": 2,
                                                                                      "length_penalty": 1.0}
        T, S = len(hyp.tokens) + 1, len(record.src_pieces)
        assert record.matrices["cross"].shape == (3, 4, T, S) and record.matrices["encoder_self"].shape == (3, 4, S, S)
        assert record.matrices["decoder_self"].shape == (3, 4, T, T) and record.tgt_pieces[-1] == "</s>"
        assert record.reference == trainer.data.valid.tgt[record.sentence] and record.chrf is not None
        assert record.src_words[-1] == [S - 1]  # </s> is a word of its own
    rnn_records = out["rnn"][2]
    assert {r.sentence for r in rnn_records} == {0, 1} and set(rnn_records[0].matrices) == {"cross"}
    assert rnn_records[0].matrices["cross"].shape[:2] == (1, 1) and rnn_records[0].window_size == 2
    assert len(rnn_records[0].positions) == rnn_records[0].matrices["cross"].shape[2]  # local-p's p_t per row
    assert rnn_records[0].gold == {"sure": [[0, 2], [1, 1]], "possible": [[0, 2], [1, 1], [2, 0]]}  # S ⊆ P


def test_routes_serve_every_step_with_the_values_the_model_produced(runs):
    """Backend: run list, sentences (source, chrF, length, every step although TensorBoard keeps
    only 10 samples of a tag), and records whose matrices are what the model computes now."""
    from nmt.attention_maps import collect_attention

    root, out = runs
    plugin, get = _client(root / "logs")
    status, body = get("/runs")
    listing = json.loads(body)["runs"]
    assert status == 200 and [r["run"] for r in listing] == ["rnn/tensorboard", "transformer/tensorboard"]
    trainer, results, written = out["transformer"]
    steps = [h["step"] for h in results["history"]]
    status, body = get("/sentences", run="transformer/tensorboard")
    sentences = json.loads(body)["sentences"]
    assert [s["sentence"] for s in sentences] == list(range(8)) and all(s["steps"] == steps for s in sentences)
    assert sentences[3]["source"] == trainer.data.valid.src[3] and sentences[3]["length"] > 0
    for step in (steps[0], steps[5], steps[-1]):  # every step is reachable
        status, body = get("/record", run="transformer/tensorboard", sentence=3, step=step)
        assert status == 200 and json.loads(body)["meta"]["step"] == step
    record = json.loads(get("/record", run="transformer/tensorboard", sentence=3, step=results["best_step"])[1])
    assert set(record["matrices"]) == set(KINDS)
    # the model as it was at that validation (training ends holding the best checkpoint), teacher-forced
    # on the search's own output
    src = [trainer.validator.valid_ids.src[3]]
    hyp = trainer.validator.decode_hypotheses(trainer.data.valid.src[3:4])[0]
    maps = collect_attention(trainer.model, trainer.data.tokenizer, src, [hyp.tokens])[0]
    expect = {"cross": maps.cross, "encoder_self": maps.encoder_self, "decoder_self": maps.decoder_self}
    for kind, layers in expect.items():
        np.testing.assert_allclose(_matrix(record["matrices"][kind]), torch.stack(layers).numpy(), atol=1e-3)
    assert record["meta"]["tgt_pieces"] == maps.tgt_pieces and record["meta"]["src_pieces"] == maps.src_pieces


def test_routes_refuse_bad_requests_and_serve_only_their_own_files(runs, tmp_path):
    root, _ = runs
    plugin, get = _client(root / "logs")
    assert plugin.is_active() and not _client(tmp_path)[0].is_active()  # active only with its data
    assert get("/record", run="transformer/tensorboard", sentence=3, step=1)[0] == 404
    assert get("/record", run="transformer/tensorboard", sentence="x", step=1)[0] == 400
    assert get("/sentences", run="nope")[0] == 404
    status, body = get("/index.js")
    assert status == 200 and b"export async function render" in body
    assert get("/static/app.js")[0] == 200 and get("/static/style.css")[0] == 200
    assert get("/static/../plugin.py")[0] == 404 and get("/static/../../config.py")[0] == 404


def test_the_plugin_never_imports_torch():
    """TensorBoard loads the plugin at start-up: importing it must stay light."""
    code = "import sys, nmt.tensorboard.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tags_are_one_per_record_part():
    assert parse_tag(tag(7, 123456, "cross")) == (7, 123456, "cross")
    assert parse_tag("attention/dev0/layer1") is None and parse_tag(f"{PLUGIN_NAME}/0001/12/cross") is None
    with pytest.raises(ValueError):
        tag(0, 0, "pictures")


def _get_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.parametrize("load_fast", [False, True])
def test_a_real_tensorboard_lists_and_serves_the_tab(runs, tmp_path, load_fast):
    """Server: the stock tensorboard command, both data paths (Python and the Rust data server):
    the plugin is listed and enabled only for a logdir that holds its data, and serves it."""
    root, out = runs
    proc, url = start_tensorboard(root / "logs", load_fast)
    try:
        wait_for_data(url, 2)
        listing = _get_json(f"{url}/data/plugins_listing")[PLUGIN_NAME]
        assert listing["enabled"] and listing["tab_name"] == "Attention"
        assert listing["loading_mechanism"] == {"type": "IFRAME", "module_path": f"/data/plugin/{PLUGIN_NAME}/index.js"}
        steps = [h["step"] for h in out["rnn"][1]["history"]]
        record = _get_json(f"{url}/data/plugin/{PLUGIN_NAME}/record?run=rnn/tensorboard&sentence=1&step={steps[-1]}")
        assert record["meta"]["gold"]["sure"] == [[0, 3], [3, 0]]
    finally:
        proc.kill()
        proc.wait()
    scalars_only = tmp_path / "scalars"
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(scalars_only / "run")) as writer:
        writer.add_scalar("loss", 1.0, 1)
    proc, url = start_tensorboard(scalars_only, load_fast)
    try:
        deadline = time.monotonic() + 60
        while "scalars" not in _get_json(f"{url}/data/plugins_listing") or \
                not _get_json(f"{url}/data/plugins_listing")["scalars"]["enabled"]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert not _get_json(f"{url}/data/plugins_listing")[PLUGIN_NAME]["enabled"]
    finally:
        proc.kill()
        proc.wait()
