"""The Attention tab: a TensorBoard dynamic plugin (``TBPlugin`` under the ``tensorboard_plugins``
entry point, an ES-module front end served from ``static/``).

It reads the summaries of :mod:`nmt.tensorboard.records` through ``context.data_provider``, so it
works with TensorBoard's Python data path and with its fast Rust data server (``--load_fast``).
Routes (JSON, under ``/data/plugin/nmt_attention``):

* ``/runs``: the runs holding attention records, with their sentence and step counts (the run the
  tab opens also with its sentence list and first record: one round trip to the first paint);
* ``/sentences?run=``: the probe sentences (source, sentence chrF, length) and their steps;
* ``/record?run=&sentence=&step=``: one record: its ``meta`` and each matrix as base64 float16
  (little endian) with its shape;
* ``/index.js`` and ``/static/<file>``: the front end (no file outside ``static/`` is served).

Only numpy, werkzeug and TensorBoard are imported: never torch.
"""
from __future__ import annotations

import base64
import json
import mimetypes
from collections import defaultdict
from pathlib import Path

import numpy as np
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from nmt.tensorboard.records import KINDS, PLUGIN_NAME, parse_content, parse_tag, tag

STATIC = Path(__file__).resolve().parent / "static"


def _respond(request, body, content_type: str = "application/json", code: int = 200):
    if content_type == "application/json" and not isinstance(body, (bytes, str)):
        body = json.dumps(body, ensure_ascii=False)
    return http_util.Respond(request, body, content_type, code=code)


class AttentionPlugin(base_plugin.TBPlugin):
    """nmt's Attention dashboard (see the module docstring)."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context):
        self._provider = context.data_provider

    def get_plugin_apps(self):
        return {"/index.js": self._serve_index, "/static/*": self._serve_static, "/runs": self._serve_runs,
                "/sentences": self._serve_sentences, "/record": self._serve_record}

    def is_active(self):
        """True when the logdir holds attention records (TensorBoard asks only when its own check,
        the data provider's plugin list, found none: then this is False too)."""
        from tensorboard.context import RequestContext

        try:
            return PLUGIN_NAME in (self._provider.list_plugins(RequestContext(), experiment_id="") or ())
        except Exception:  # a data server that is not up yet: no tab rather than a failed listing
            return False

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Attention", disable_reload=True)

    def _index(self, request) -> dict:
        """``{run: {sentence: {step: {part: plugin content}}}}`` from the tags alone."""
        ctx, eid = plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)
        listing = self._provider.list_tensors(ctx, experiment_id=eid, plugin_name=PLUGIN_NAME)
        index: dict = defaultdict(lambda: defaultdict(dict))
        for run, tags in listing.items():
            for name, series in tags.items():
                parsed, info = parse_tag(name), parse_content(series.plugin_content)
                if parsed is None or info is None:
                    continue
                sentence, step, part = parsed
                index[run][sentence].setdefault(step, {})[part] = info
        return index

    @wrappers.Request.application
    def _serve_runs(self, request):
        """Every run with its steps; the run with the most steps (the one the tab opens) also
        with its sentence list, which saves the page a round trip."""
        index = self._index(request)
        runs = [{"run": run, "sentences": len(sentences),
                 "steps": sorted({s for steps in sentences.values() for s in steps})}
                for run, sentences in sorted(index.items())]
        if runs:
            main = max(runs, key=lambda r: len(r["steps"]))  # the first of the longest, as the page chooses
            main["sentences_list"] = listing = _sentence_list(index[main["run"]])
            first = listing[0]
            main["first_record"] = self._record(request, main["run"], first["sentence"], first["steps"][-1])
        return _respond(request, {"runs": runs})

    @wrappers.Request.application
    def _serve_sentences(self, request):
        run = request.args.get("run", "")
        sentences = self._index(request).get(run)
        if sentences is None:
            return _respond(request, {"error": f"no attention records in run {run!r}"}, code=404)
        return _respond(request, {"run": run, "sentences": _sentence_list(sentences)})

    @wrappers.Request.application
    def _serve_record(self, request):
        try:
            run = request.args["run"]
            sentence, step = int(request.args["sentence"]), int(request.args["step"])
        except (KeyError, ValueError):
            return _respond(request, {"error": "give run=, sentence= and step= (numbers)"}, code=400)
        body = self._record(request, run, sentence, step)
        if body is None:
            return _respond(request, {"error": f"no record of sentence {sentence} at step {step} in {run!r}"},
                            code=404)
        return _respond(request, body)

    def _record(self, request, run: str, sentence: int, step: int):
        """``{"run", "meta", "matrices": {kind: {"shape", "data"}}}`` of one record, or None."""
        tags = [tag(sentence, step, part) for part in ("meta", *KINDS)]
        ctx, eid = plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)
        data = self._provider.read_tensors(ctx, experiment_id=eid, plugin_name=PLUGIN_NAME, downsample=1,
                                           run_tag_filter=provider.RunTagFilter(runs=[run], tags=tags))
        series = data.get(run, {})
        if not series.get(tags[0]):
            return None
        meta = json.loads(_scalar_bytes(series[tags[0]][-1].numpy).decode("utf-8"))
        matrices = {}
        for kind, name in zip(KINDS, tags[1:]):
            if series.get(name):
                array = np.asarray(series[name][-1].numpy, dtype="<f2")
                matrices[kind] = {"shape": list(array.shape),
                                  "data": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")}
        return {"run": run, "meta": meta, "matrices": matrices}

    @wrappers.Request.application
    def _serve_index(self, request):
        return _static_file(request, "index.js")

    @wrappers.Request.application
    def _serve_static(self, request):
        return _static_file(request, request.path.rsplit("/static/", 1)[-1])


def _sentence_list(sentences: dict) -> list[dict]:
    """Per sentence (from its latest ``meta`` part's plugin content): source, chrF, length, steps."""
    out = []
    for sentence, steps in sorted(sentences.items()):
        last = steps[max(steps)].get("meta", {})
        out.append({"sentence": sentence, "source": last.get("source", ""), "chrf": last.get("chrf"),
                    "length": last.get("length"), "steps": sorted(steps)})
    return out


def _scalar_bytes(value) -> bytes:
    """The bytes of a string tensor's only element (numpy object array or bytes)."""
    item = value.item() if isinstance(value, np.ndarray) else value
    return item if isinstance(item, bytes) else str(item).encode("utf-8")


def _static_file(request, name: str):
    """A file of ``static/`` by its plain name; anything else (``../``, sub-folders) is 404."""
    files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    if name not in files:
        return _respond(request, "not found", "text/plain", code=404)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name.endswith(".js"):
        content_type = "text/javascript"
    return _respond(request, files[name].read_bytes(), content_type)
