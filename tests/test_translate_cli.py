"""nmt-translate: output formats, chunked streaming, the progress bar, interactive mode and
ensembles from the command line, on tiny untrained checkpoints (random but fixed outputs)."""
from __future__ import annotations

import io
import json
import re
import subprocess

import pytest

from nmt.cli.interactive import run_interactive
from nmt.cli.translate import main, translate_stream
from nmt.cli.translate_engines import TorchEngine
from nmt.cli.translate_io import progress_bar
from nmt.cli.options import TranslateConfig
from test_cli_e2e import _script
from test_ensemble import make_checkpoint, tiny_tokenizer

SOURCES = ["a man walks a dog", "", "two women sing a song in the park", "der Hund\x00rennt", "ein Kind spielt"]
CLEAN = ["a man walks a dog", "", "two women sing a song in the park", "der Hund rennt", "ein Kind spielt"]
LINKS = re.compile(r"^(\d+-\d+( \d+-\d+)*)?$")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Run directories: a Transformer ``a``, a BiRNN ``b`` (same tokenizer), ``c`` with another tokenizer."""
    root = tmp_path_factory.mktemp("translate_cli")
    tok = tiny_tokenizer(60)
    make_checkpoint(root, "a", tok, 1)
    make_checkpoint(root, "b", tok, 2, arch="rnn")
    make_checkpoint(root, "c", tiny_tokenizer(64), 3)
    (root / "in.txt").write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    return root


def _translate(capsys, root, *args, ckpt="a"):
    capsys.readouterr()
    main([f"ckpt={root / ckpt}", f"input={root / 'in.txt'}", "progress=false", *args])
    return capsys.readouterr().out


def _check_links(links, src, text):
    assert LINKS.match(links), links
    assert all(int(i) < len(src.split()) and int(j) < len(text.split())
               for i, j in (link.split("-") for link in links.split()))


def test_plain_and_score_formats_one_line_per_input_line(ckpts, capsys):
    plain = _translate(capsys, ckpts, "beam_size=2").split("\n")
    assert len(plain) == len(SOURCES) + 1 and plain[-1] == "" and plain[1] == ""
    assert sum(bool(line) for line in plain) >= 3  # the untrained model writes (random) words
    score = _translate(capsys, ckpts, "beam_size=2", "format=score")
    assert _translate(capsys, ckpts, "beam_size=2", "scores=true") == score  # the alias
    for line, text in zip(score.split("\n")[:-1], plain):
        value, got = line.split("\t")
        assert got == text and float(value) <= 0.0
    nbest = _translate(capsys, ckpts, "beam_size=2", "nbest=2").strip("\n").split("\n")
    assert _translate(capsys, ckpts, "beam_size=2", "nbest=2", "format=score").strip("\n").split("\n") == nbest
    blocks = [line.split(" ||| ") for line in nbest]
    assert all(len(b) == 3 for b in blocks)
    ids = [int(b[0]) for b in blocks]
    assert ids == sorted(ids) and [ids.count(i) for i in range(5)] == [2, 1, 2, 2, 2]
    assert [blocks[ids.index(i)][1] for i in range(5)] == plain[:5]  # each block starts with the one-best
    with pytest.raises(SystemExit, match="format=score"):
        _translate(capsys, ckpts, "scores=true", "format=jsonl")
    with pytest.raises(SystemExit, match="expected one of plain, score, tsv, jsonl"):
        _translate(capsys, ckpts, "format=xml")


def test_tsv_format_with_ranks_scores_and_alignment_column(ckpts, capsys):
    plain = _translate(capsys, ckpts, "beam_size=3").split("\n")
    rows = [r.split("\t") for r in _translate(capsys, ckpts, "beam_size=3", "nbest=2", "format=tsv",
                                              "print_alignment=true").strip("\n").split("\n")]
    assert all(len(r) == 5 for r in rows)
    assert [(int(r[0]), int(r[1])) for r in rows] == [(0, 1), (0, 2), (1, 1), (2, 1), (2, 2), (3, 1), (3, 2),
                                                       (4, 1), (4, 2)]
    assert [r[3] for r in rows if r[1] == "1"] == plain[:5]  # rank 1 is the one-best translation
    for first, second in zip(rows, rows[1:]):
        if first[0] == second[0]:
            assert float(first[2]) >= float(second[2])  # best first
    for i, _, _, text, links in rows:
        _check_links(links, CLEAN[int(i)], text)
    assert rows[2][3:] == ["", ""]  # the empty line: one empty hypothesis, no links


def test_jsonl_parses_and_ids_follow_input_order(ckpts, capsys):
    tsv = [r.split("\t") for r in _translate(capsys, ckpts, "beam_size=2", "nbest=2", "format=tsv").split("\n")[:-1]]
    objs = [json.loads(line) for line in _translate(capsys, ckpts, "beam_size=2", "nbest=2",
                                                     "format=jsonl").split("\n")[:-1]]
    assert [o["id"] for o in objs] == list(range(5)) and [o["src"] for o in objs] == CLEAN
    assert set(objs[0]) == {"id", "src", "hyps"} and set(objs[0]["hyps"][0]) == {"text", "score", "alignment"}
    flat = [(o["id"], h["text"], round(h["score"], 4)) for o in objs for h in o["hyps"]]
    assert flat == [(int(r[0]), r[3], float(r[2])) for r in tsv]
    assert all(h["alignment"] is None for o in objs for h in o["hyps"])  # only with print_alignment=true
    aligned = [json.loads(line) for line in _translate(capsys, ckpts, "beam_size=2", "format=jsonl",
                                                        "print_alignment=true").split("\n")[:-1]]
    for o in aligned:
        assert len(o["hyps"]) == 1
        _check_links(o["hyps"][0]["alignment"], o["src"], o["hyps"][0]["text"])


def test_streaming_in_small_chunks_keeps_input_order_and_output(ckpts, capsys):
    one = _translate(capsys, ckpts, "beam_size=2", "nbest=2", "format=tsv", "chunk_size=1000")
    small = _translate(capsys, ckpts, "beam_size=2", "nbest=2", "format=tsv", "chunk_size=2")
    assert small == one  # ids continue across chunks, order kept
    assert _translate(capsys, ckpts, "format=jsonl", "chunk_size=1") == _translate(capsys, ckpts, "format=jsonl")
    out = ckpts / "out" / "hyp.txt"
    _translate(capsys, ckpts, "chunk_size=2", f"output={out}")
    assert out.read_text(encoding="utf-8") == _translate(capsys, ckpts)
    assert [p.name for p in out.parent.iterdir()] == ["hyp.txt"]  # the temporary file was renamed
    with pytest.raises(SystemExit, match="chunk_size=0: must be between 1 and"):
        _translate(capsys, ckpts, "chunk_size=0")


class _WatchedStdin(io.BytesIO):
    """Binary stdin that records how many output lines were written before each line was read."""

    def __init__(self, data: bytes, out: io.StringIO) -> None:
        super().__init__(data)
        self.out, self.seen = out, []

    def readline(self, *args):
        line = super().readline(*args)
        if line:
            self.seen.append(self.out.getvalue().count("\n"))
        return line


def test_each_chunk_is_written_before_the_next_is_read(ckpts):
    out = io.StringIO()
    stdin = _WatchedStdin("".join(s + "\n" for s in SOURCES).encode(), out)
    cfg = TranslateConfig(ckpt=str(ckpts / "a"), chunk_size=2, beam_size=1, progress="false")
    assert translate_stream(cfg, [], "plain", stdin=stdin, stdout=out) == 5
    # lines 1-2 read first; line 3 only after chunk 1's two outputs were written; line 5 after four
    assert stdin.seen == [0, 0, 2, 2, 4]
    assert out.getvalue().count("\n") == 5


def test_progress_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_bar("auto", io.StringIO()) is None and progress_bar("false", Terminal()) is None
    term = Terminal()
    bar = progress_bar("auto", term)
    bar.update(3)
    bar.close()
    assert "3 lines" in term.getvalue()
    forced = progress_bar("true", io.StringIO())
    assert forced is not None
    forced.close()
    with pytest.raises(SystemExit, match="progress='sometimes'"):
        progress_bar("sometimes")


class _Spy:
    """A real engine that records the settings of every translation."""

    def __init__(self, engine):
        self.engine, self.settings = engine, []
        self.supports_alignment = engine.supports_alignment

    def translate(self, lines, settings, first_line=1):
        self.settings.append(settings)
        return self.engine.translate(lines, settings, first_line)

    def heatmap(self, decoded, line):
        return self.engine.heatmap(decoded, line)


def test_interactive_commands_change_settings_heatmap_appears_and_quit_ends(ckpts):
    engine = _Spy(TorchEngine(TranslateConfig(ckpt=str(ckpts / "a"))))
    commands = ["a man walks a dog", ":beam 3", ":nbest 2", ":lp 0.5", "two women sing", ":align off",
                "der Hund rennt", ":beam zero", ":frobnicate", ":help", ":quit", "never translated"]
    out = io.StringIO()
    assert run_interactive(engine, engine.engine.defaults, io.StringIO("\n".join(commands) + "\n"), out) == 3
    text = out.getvalue()
    assert [(s.beam_size, s.nbest, s.length_penalty, s.alignment) for s in engine.settings] == [
        (2, 1, None, True), (3, 2, 0.5, True), (3, 2, 0.5, False)]
    answers = text.split("\n> ")
    first = answers[1].split("\n")  # rank, score, text; blank; heatmap
    rank, score, best = re.match(r"^\s*(\d+)\s+(-?\d+\.\d{4})  (.*)$", first[0]).groups()
    assert rank == "1" and float(score) <= 0 and first[1] == ""
    rows = [r for r in first[2:] if r[:12].strip()]  # rows carry a target word; the header rows do not
    assert [r[:12].strip() for r in rows] == [w[:12] for w in best.split()] + ["</s>"]
    assert all(set(r[13:]) <= set(" .:-=+*#%@") and r[13:].strip() for r in rows)
    second = [line for line in answers[5].split("\n") if line]
    assert [line.split()[0] for line in second[:2]] == ["1", "2"] and len(second) > 2  # n-best, then heatmap
    third = [line for line in answers[7].split("\n") if line]
    assert [line.split()[0] for line in third] == ["1", "2"]  # :align off: no heatmap
    assert "error: :beam needs a whole number" in text and "error: unknown command :frobnicate" in text
    assert ":nbest N" in text and "beam=3 nbest=2 lp=0.5 align=off" in text
    eof = io.StringIO()
    assert run_interactive(engine, engine.engine.defaults, io.StringIO("a dog\n"), eof) == 1  # Ctrl-D ends
    assert eof.getvalue().endswith("> \n")


def test_ensemble_of_two_checkpoints_from_the_cli(ckpts):
    import torch

    from nmt.data.batch import Batch
    from nmt.checkpoint import load_ensemble
    from nmt.search import beam_search

    proc = subprocess.run([_script("nmt-translate"), f"ckpt={ckpts / 'a'},{ckpts / 'b'}", "beam_size=2",
                           "format=jsonl", "progress=false"], input="a man walks a dog\n\nder Hund rennt\n",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    objs = [json.loads(line) for line in proc.stdout.split("\n")[:-1]]
    assert [o["id"] for o in objs] == [0, 1, 2] and "ensemble of 2 checkpoints" in proc.stderr
    loaded = load_ensemble([str(ckpts / "a"), str(ckpts / "b")])
    src = loaded.tokenizer.encode_src(["a man walks a dog"])
    with torch.no_grad():
        best = beam_search(loaded.model, Batch.collate(src), beam_size=2, max_len_a=1.2, max_len_b=10)[0][0]
    assert objs[0]["hyps"][0]["text"] == loaded.tokenizer.decode_tgt([best.tokens])[0]
    assert objs[0]["hyps"][0]["score"] == pytest.approx(best.score, abs=1e-4)
    bad = subprocess.run([_script("nmt-translate"), f"ckpt={ckpts / 'a'},{ckpts / 'c'}", "a dog"],
                         capture_output=True, text=True, timeout=120)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode != 0 and len(errors) == 1 and "Traceback" not in bad.stderr
    assert str(ckpts / "a") in errors[0] and str(ckpts / "c") in errors[0]


def test_ctranslate2_engine_goes_through_the_same_formats(ckpts, capsys):
    pytest.importorskip("ctranslate2", reason="the ct2 extra is not installed")
    from nmt.cli.export import main as export

    model = ckpts / "ct2"
    if not model.exists():
        export([f"ckpt={ckpts / 'a'}", f"out={model}"])
    base = ["engine=ctranslate2", f"model={model}", f"input={ckpts / 'in.txt'}", "beam_size=2", "nbest=2",
            "progress=false"]
    capsys.readouterr()
    main([*base, "format=tsv"])
    rows = [r.split("\t") for r in capsys.readouterr().out.split("\n")[:-1]]
    assert all(len(r) == 4 for r in rows) and [int(r[0]) for r in rows if r[1] == "1"] == list(range(5))
    main([*base, "format=jsonl"])
    objs = [json.loads(line) for line in capsys.readouterr().out.split("\n")[:-1]]
    assert [o["id"] for o in objs] == list(range(5)) and [o["src"] for o in objs] == CLEAN
    assert [(o["id"], h["text"]) for o in objs for h in o["hyps"]] == [(int(r[0]), r[3]) for r in rows]
    assert all(h["alignment"] is None for o in objs for h in o["hyps"])
