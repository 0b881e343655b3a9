"""The documents agree with the code (issue 38): each command's ``--help`` and ``docs/cli.md`` come
from the same field comments, the defaults they print are those a run gets, the README reaches
train, translate and the attention view early, every relative link resolves, and no code comment
or config carries a dated measurement, a host name or a development-machine path."""
from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nmt.cli import parse_options
from nmt.cli.options import AlignConfig, AverageConfig, EvaluateConfig, ExportConfig, TranslateConfig
from nmt.cli.reference import reference_markdown
from nmt.config import Config, register_configs, to_config
from nmt.field_docs import options

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SCHEMAS = [Config, TranslateConfig, EvaluateConfig, AlignConfig, AverageConfig, ExportConfig]


def test_cli_reference_is_generated_from_the_code():
    """docs/cli.md is what scripts/gen_cli_docs.py writes today."""
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == reference_markdown(CONF), \
        "docs/cli.md is stale: run python scripts/gen_cli_docs.py"


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
def test_every_option_is_documented(schema):
    undocumented = [o.key for o in options(schema) if not o.doc]
    assert not undocumented, f"{schema.__name__}: give these fields a comment on their line: {undocumented}"


def test_help_prints_every_option_with_its_doc_as_the_reference_does(capsys, monkeypatch):
    assert parse_options(TranslateConfig, "nmt-translate: test", ["--help"]) is None
    printed = capsys.readouterr().out
    reference = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for opt in options(TranslateConfig):
        assert f"  {opt.key}: {opt.type} = {opt.default}" in printed
        assert f"| `{opt.key}` | {opt.type.replace('|', chr(92) + '|')} | `{opt.default}` |" in reference
    from nmt.cli import train

    monkeypatch.setattr(sys, "argv", ["nmt-train", "--help"])
    train.main()
    printed = capsys.readouterr().out
    assert "experiment=multi30k_rnn_bahdanau | multi30k_rnn_luong | multi30k_transformer" in printed
    assert "  train.max_tokens: int = 4096\n      source+target-padded token budget" in printed


def test_documented_defaults_are_what_a_run_gets():
    """The tables print the dataclass defaults; the default Hydra composition must not differ."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        composed = to_config(compose(config_name="config"))
    assert OmegaConf.to_container(OmegaConf.structured(composed)) == \
        OmegaConf.to_container(OmegaConf.structured(Config()))
    assert dataclasses.is_dataclass(composed)


def _readme_lines() -> list[str]:
    return (ROOT / "README.md").read_text(encoding="utf-8").splitlines()


def test_readme_is_a_front_door():
    """About 200 lines, and train, translate and the attention view within its first 80."""
    lines = _readme_lines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; move guides to docs/"
    head = "\n".join(lines[:80])
    for command in ("nmt-train debug=tiny", "nmt-translate ckpt=", "tensorboard --logdir"):
        assert command in head, f"{command!r} is not within README.md's first 80 lines"


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_relative_links_resolve():
    broken = []
    for path in _markdown_files():
        text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (path.parent / target.split("#")[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "links to missing files:\n  " + "\n  ".join(broken)


#: a dated measurement, a host, a changelog or a development-machine path in code or configs
CLAIMS = re.compile(r"zen ?4|epyc|\b20\d\d-\d\d-\d\d\b|\bsince 20\d\d|/work/|/home/\w+", re.I)


def test_code_and_configs_carry_no_dated_claims_or_machine_paths():
    """Numbers and dates belong in docs/; code says why in a sentence (issue 38)."""
    found = []
    for path in [*sorted((ROOT / "nmt").rglob("*.py")), *sorted(CONF.rglob("*.yaml")),
                 *sorted((ROOT / "scripts").glob("*.py"))]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if CLAIMS.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n  ".join(["dated claims or machine paths:", *found])
