"""Config composition (ARCHITECTURE.md example 3)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from nmt.cli.options import TranslateConfig
from nmt.config import Config, config_from_yaml, config_to_yaml, parse_cli, register_configs, to_config

CONF = str(Path(__file__).resolve().parents[1] / "conf")
EXPERIMENTS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))
DEBUGS = sorted(p.stem for p in (Path(CONF) / "debug").glob("*.yaml"))


def _compose(overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_into_typed_config(experiment):
    cfg = to_config(_compose([f"experiment={experiment}"]))
    assert isinstance(cfg, Config)
    if experiment.startswith("multi30k"):  # the one-hour CPU recipes
        assert cfg.train.max_time_minutes > 0
    else:  # the WMT recipes end after the papers' number of updates
        assert cfg.train.max_steps > 0


@pytest.mark.parametrize("debug", DEBUGS)
def test_debug_configs_compose(debug):
    cfg = to_config(_compose([f"debug={debug}"]))
    assert cfg.data.max_train_pairs and cfg.data.max_train_pairs <= 1000


def test_multi30k_recipe_matches_reference_setup():
    cfg = to_config(_compose(["experiment=multi30k_transformer"]))
    assert (cfg.model.d_model, cfg.model.ffn_dim, cfg.model.num_heads) == (256, 512, 4)
    assert cfg.data.tokenizer.vocab_size == 8000 and cfg.data.tokenizer.joint
    assert list(cfg.optim.betas) == [0.9, 0.98]


@pytest.mark.parametrize("override", ["model.d_modle=128", "train.max_tokenz=10", "nonsense=1"])
def test_misspelt_key_fails_at_compose_time(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        _compose([override])


def test_wrong_type_fails_at_compose_time():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        _compose(["model.d_model=big"])


@pytest.mark.parametrize("override", ["data.on_empty=sometimes", "model.arch=lstm", "model.rnn_type=elman",
                                      "model.decoder.style=graves", "model.attention.score=dotty",
                                      "model.attention.window=local", "optim.scheduler=step", "train.precision=fp8",
                                      "model.activation=tanh", "model.positions=rotary", "optim.optimizer=lion"])
def test_bad_choice_fails_at_compose_time_naming_the_key(override):
    """Issue 38: choice-valued settings are Enums (nmt.choices), refused by Hydra at compose time."""
    with pytest.raises((ConfigCompositionException, ValidationError)) as info:
        _compose(["model=rnn", override] if override.startswith(("model.rnn", "model.dec", "model.att")) else [override])
    assert override.split("=")[0] in str(info.value) + str(info.value.__cause__)


@pytest.mark.parametrize("experiment", EXPERIMENTS + [None])
def test_shipped_configs_are_valid(experiment):
    from nmt.config_checks import validate

    validate(to_config(_compose([f"experiment={experiment}"] if experiment else [])))


@pytest.mark.parametrize("overrides, named", [
    (["model.num_heads=3"], "model.d_model=256 is not divisible by model.num_heads=3"),
    (["model.attention.window=local_p"], "model.attention (score=additive, window=local_p) configures RNN attention"),
    (["model=rnn", "model.hidden_size=511"], "model.hidden_size=511 must be even"),
    (["optim.scheduler=cosine"], "optim.scheduler=cosine decays over train.max_steps"),
    (["search.nbest=6", "search.beam_size=5"], "need 1 <= nbest <= beam_size"),
    (["data.tgt_lang=en"], "data.src_lang and data.tgt_lang are both 'en'"),
    (["model.share_embeddings=true", "data.tokenizer.joint=false"], "model.share_embeddings=true needs one joint"),
])
def test_impossible_combinations_fail_before_any_work_naming_the_key(overrides, named):
    """Combinations the schema cannot express are refused by nmt.config.validate, which nmt-train
    calls before reading data (every message names the key)."""
    from nmt.config import ConfigError
    from nmt.config_checks import validate

    with pytest.raises(ConfigError) as info:
        validate(to_config(_compose(overrides)))
    assert named in str(info.value)


def test_yaml_round_trip():
    cfg = to_config(_compose(["experiment=multi30k_transformer", "data.src_lang=de", "data.tgt_lang=en"]))
    again = config_from_yaml(config_to_yaml(cfg))
    assert again == cfg


def test_cli_parser_rejects_unknown_key():
    with pytest.raises(SystemExit) as err:
        parse_cli(TranslateConfig, ["ckpt=x", "beam=3"])
    assert "beam" in str(err.value)
    cfg = parse_cli(TranslateConfig, ["ckpt=x", "beam_size=3"])
    assert cfg.beam_size == 3


def test_translate_arguments_split_into_overrides_and_sentences():
    from nmt.cli.translate import split_argv

    opts, sents = split_argv(["ckpt=runs/x", "A man = a dog.", "beam_size=5", "x=1 holds", "+attention.ascii=true"])
    assert opts == ["ckpt=runs/x", "beam_size=5", "+attention.ascii=true"]
    assert sents == ["A man = a dog.", "x=1 holds"]  # sentences keep their order
    assert split_argv(["ckpt=r", "--", "a=b"]) == (["ckpt=r"], ["a=b"])


def test_a_wheel_ships_the_hydra_configs(tmp_path):
    """A non-editable install finds conf/ as nmt/conf (nmt.cli.train.conf_dir)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root = Path(CONF).parent
    src = tmp_path / "src"
    for name in ("nmt", "conf"):
        shutil.copytree(root / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("nmt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for yaml in Path(CONF).rglob("*.yaml"):
        assert "nmt/conf/" + yaml.relative_to(CONF).as_posix() in names
    assert "nmt/cli/train.py" in names and not any(n.startswith("conf/") for n in names)


def test_nmt_train_refuses_an_impossible_combination_before_reading_data(tmp_path):
    """nmt-train exits 2 with the key named, without touching data (the data dir does not exist)."""
    import os
    import shutil
    import subprocess
    import sys

    script = shutil.which("nmt-train") or str(Path(sys.executable).parent / "nmt-train")
    env = dict(os.environ, NMT_DATA_DIR=str(tmp_path / "no-data-here"))
    proc = subprocess.run([script, "model.num_heads=3", f"hydra.run.dir={tmp_path / 'run'}", "data.download=false"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "model.d_model=256 is not divisible by model.num_heads=3" in proc.stdout + proc.stderr
    assert "no-data-here" not in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("override, named", [
    ("train.log_every_steps=0", "train.log_every_steps=0"),
    ("search.batch_size=0", "search.batch_size=0"),
    ("search.batch_size=-1", "search.batch_size=-1"),
    ("optim.lr=0", "optim.lr=0"),
    ("train.keep_last=1", "train.keep_last=1"),
    ("model.d_model=0", "model.d_model=0"),
    ("model.max_positions=100000000", "model.max_positions=100000000"),
    ("data.max_len=1024", "data.max_len=1024 must be below model.max_positions=1024"),
    ("data.tgt_lang=../../etc", "data.tgt_lang='../../etc'"),
    ("optim.clip_norm=nan", "optim.clip_norm=nan"),
])
def test_values_that_would_fail_late_or_silently_are_refused_naming_the_key(override, named):
    """Issue 36 B9: values that used to fail after an epoch (or never, with empty translations
    and BLEU 0) are refused by nmt.config_checks.validate before any work, naming the key."""
    from nmt.config import ConfigError
    from nmt.config_checks import validate

    with pytest.raises(ConfigError) as info:
        validate(to_config(_compose([override])))
    assert named in str(info.value)


@pytest.mark.parametrize("option", ["batch_size=0", "batch_size=-3", "beam_size=0", "chunk_size=0", "nbest=0"])
def test_console_script_options_are_range_checked(option):
    """Issue 36 B9: nmt-translate batch_size=-3 silently translated every line to nothing."""
    from nmt.cli.translate import main

    with pytest.raises(SystemExit) as info:
        main(["ckpt=unused", option, "a sentence"])
    assert str(info.value).startswith("error: ") and option.split("=")[0] in str(info.value)


def test_a_checkpoints_config_is_never_interpolated(monkeypatch):
    """R30: a shared checkpoint's config.yaml holding ${oc.env:...} is refused, never resolved
    (it would hand an environment secret, or a path built from one, to the code)."""
    from nmt.config import ConfigError

    monkeypatch.setenv("SECRET_TOKEN", "do-not-leak")
    for text in ("data:\n  dir: ${oc.env:SECRET_TOKEN}\n", "data:\n  tgt_lang: x${oc.env:HOME}\n",
                 "name: ${oc.create:{a: 1}}\n", "a: &x [1]\nb: *x\n", "- not a mapping\n"):
        with pytest.raises(ConfigError) as info:
            config_from_yaml(text, "model/config.yaml")
        assert "model/config.yaml" in str(info.value) and "do-not-leak" not in str(info.value)


def test_an_empty_dev_split_is_refused_when_it_is_read(tmp_path):
    """Issue 36 B9: an empty dev split failed with ZeroDivisionError after the first epoch."""
    from nmt.config import DataConfig
    from nmt.data.errors import DataError
    from nmt.data.splits import load_split

    for name in ("train.en", "train.de"):
        (tmp_path / name).write_text("a b\n")
    for name in ("valid.en", "valid.de"):
        (tmp_path / name).write_text("")
    with pytest.raises(DataError, match="valid split 'valid' is empty"):
        load_split(DataConfig(dir=str(tmp_path), download=False), "valid")
