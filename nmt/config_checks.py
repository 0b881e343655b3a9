"""Rules a :class:`nmt.config.Config` must satisfy beyond its types, checked before any work starts.

``nmt-train`` calls :func:`validate` right after Hydra composes the config; checkpoint loading
calls it on every ``config.yaml`` it reads (an untrusted checkpoint's config is bounded before
anything is allocated, RELIABILITY.md R30); the ``key=value`` console scripts call
:func:`check_options`. Every message names the key, the value and what would work.
"""
from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any, Iterator

from nmt.config import AttentionConfig, Config, ConfigError
from nmt.io import SAFE_NAME

INF = math.inf

#: key -> (lowest, highest) allowed value, inclusive. The highest values bound what an untrusted
#: checkpoint can make us allocate or loop over; they are far above any published model.
BOUNDS: dict[str, tuple[float, float]] = {
    "data.max_len": (1, 100_000), "data.max_len_ratio": (0, INF), "data.max_drop_fraction": (0, 1),
    "data.num_proc": (1, 1024), "data.shuffle_buffer": (1, 10**9), "data.stream_spm_sentences": (1, 10**10),
    "data.max_train_pairs": (1, INF), "data.max_valid_pairs": (1, INF), "data.max_test_pairs": (1, INF),
    "data.tokenizer.vocab_size": (8, 10**6), "data.tokenizer.character_coverage": (0.5, 1),
    "data.tokenizer.input_sentence_size": (0, 10**10), "data.tokenizer.num_threads": (1, 1024),
    "data.tokenizer.alpha": (0, INF), "data.tokenizer.nbest_size": (-1, 1024),
    "model.embed_dim": (1, 65536), "model.hidden_size": (2, 65536), "model.d_model": (1, 65536),
    "model.num_heads": (1, 1024), "model.ffn_dim": (1, 262144), "model.encoder_layers": (1, 1000),
    "model.decoder_layers": (1, 1000), "model.dropout": (0, 0.999), "model.attention_dropout": (0, 0.999),
    "model.activation_dropout": (0, 0.999), "model.max_positions": (2, 16384),
    "model.attention.window_size": (0, 16384), "model.attention.attention_dim": (0, 65536),
    "model.attention.cosine_scale": (1e-6, 1e6), "model.attention.max_src_len": (1, 16384),
    "optim.lr": (1e-12, 1e3), "optim.eps": (1e-30, 1), "optim.weight_decay": (0, 1e3),
    "optim.warmup_steps": (0, 10**9), "optim.warmup_init_lr": (0, 1e3), "optim.min_lr": (0, 1e3),
    "optim.clip_norm": (0, INF),
    "train.seed": (0, 2**32 - 1), "train.max_tokens": (1, 10**9), "train.update_freq": (1, 10**6),
    "train.label_smoothing": (0, 0.999), "train.max_epochs": (1, 10**9), "train.max_steps": (0, 10**12),
    "train.max_time_minutes": (0, INF), "train.valid_every_steps": (0, 10**12), "train.valid_every_epochs": (1, 10**9),
    "train.validate_after_updates": (0, 10**12), "train.valid_max_sentences": (0, 10**12),
    "train.patience": (0, 10**9), "train.log_every_steps": (1, 10**12), "train.keep_last": (2, 10**6),
    "train.average_last": (0, 10**6), "train.average_best": (0, 10**6), "train.num_threads": (0, 1024),
    "train.num_samples": (0, 10**6), "train.save_every_steps": (0, 10**12), "train.max_bad_steps": (0, 10**9),
    "train.fp16_init_scale": (1e-30, 1e30), "train.dist_timeout_minutes": (0.1, 10**6),
    "train.attention.sentences": (0, 10**6), "train.attention.layer_sentences": (0, 10**6),
    "train.attention.every": (1, 10**9), "train.attention.stats_sentences": (0, 10**9),
    "search.beam_size": (1, 1000), "search.nbest": (1, 1000), "search.max_len_a": (0, 1000),
    "search.max_len_b": (0, 16384), "search.batch_size": (1, 10**6), "search.length_penalty": (-10, 10),
}

#: key -> the values it may take (the Enum-typed settings of nmt.choices are checked by OmegaConf)
CHOICES: dict[str, tuple[str, ...]] = {"data.tokenizer.model_type": ("unigram", "bpe")}

#: keys whose values become parts of file names (R30): letters, digits, '_' and '-' only
NAMES = ("data.corpus", "data.src_lang", "data.tgt_lang", "data.train_split", "data.valid_split", "data.test_split",
         "data.hf_valid_split", "data.hf_test_split")


def flat_items(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``("model.d_model", 256), ...`` for every leaf of a (nested) config dataclass."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            yield from flat_items(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def _number(x: float) -> str:
    return f"{int(x):,}" if math.isfinite(x) and float(x).is_integer() else f"{x:g}"


def _range_problems(values: dict[str, Any], bounds: dict[str, tuple[float, float]]) -> list[str]:
    problems = []
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{key}={value}: must be a finite number")
        elif key in bounds and value is not None:
            low, high = bounds[key]
            if not low <= value <= high:
                problems.append(f"{key}={value}: must be between {_number(low)} and {_number(high)}")
    return problems


def _value_problems(values: dict[str, Any]) -> list[str]:
    """Ranges, choices, names and the device string of one config."""
    problems = _range_problems(values, BOUNDS)
    problems += [f"{key}={values[key]!r}: expected one of {', '.join(choices)}"
                 for key, choices in CHOICES.items() if values[key] not in choices]
    problems += [f"{key}={values[key]!r}: expected letters, digits, '_' or '-' only (it becomes part of a file name)"
                 for key in NAMES if values[key] is not None and not SAFE_NAME.match(str(values[key]))]
    device = str(values["train.device"])
    if device not in ("cpu", "cuda", "auto", "mps") and not (device.startswith("cuda:") and device[5:].isdigit()):
        problems.append(f"train.device={device!r}: expected cpu, cuda, cuda:N, mps or auto")
    if any(not 0 <= b < 1 for b in values["optim.betas"]) or len(values["optim.betas"]) != 2:
        problems.append(f"optim.betas={list(values['optim.betas'])}: expected two numbers in [0, 1)")
    if values["train.average_last"] == 1 or values["train.average_best"] == 1:
        problems.append("train.average_last and train.average_best average N >= 2 checkpoints (0 = off)")
    return problems


def _mixture_problems(data) -> list[str]:
    """``data.train``: plain-text corpora with positive weights, cached and mixed in memory maps."""
    if not data.train:
        return []
    problems = [f"data.train[{i}].dir is empty" for i, c in enumerate(data.train) if not c.dir]
    problems += [f"data.train[{i}].weight={c.weight} must be positive" for i, c in enumerate(data.train)
                 if not c.weight > 0]
    for option, value in (("data.hf_name", data.hf_name), ("data.streaming", data.streaming),
                          ("data.tokenizer.enable_sampling", data.tokenizer.enable_sampling)):
        if value:
            problems.append(f"data.train mixes plain-text corpora through the id cache; {option}={value} "
                            "cannot be combined with it")
    return problems


def _model_problems(cfg: Config) -> list[str]:
    """Combinations that matter for training and translation alike."""
    m = cfg.model
    problems = []
    if m.arch == "transformer":
        if m.num_heads >= 1 and m.d_model % m.num_heads:
            problems.append(f"model.d_model={m.d_model} is not divisible by model.num_heads={m.num_heads}")
        default = AttentionConfig()
        if (m.attention.window, m.attention.score) != (default.window, default.score):
            problems.append(f"model.attention (score={m.attention.score}, window={m.attention.window}) configures "
                            "RNN attention, but model.arch=transformer uses multi-head scaled dot-product "
                            "attention; use model=rnn for Luong/Bahdanau/local attention")
    if m.arch == "rnn":
        if m.hidden_size % 2:
            problems.append(f"model.hidden_size={m.hidden_size} must be even: each encoder direction gets half")
        if m.attention.window != "global" and m.attention.window_size < 1:
            problems.append(f"model.attention.window_size={m.attention.window_size}: local attention needs D >= 1")
    if not -m.decoder_layers <= m.alignment_layer < m.decoder_layers:
        problems.append(f"model.alignment_layer={m.alignment_layer}: the decoder has {m.decoder_layers} layers")
    if m.share_embeddings and not cfg.data.tokenizer.joint:
        problems.append("model.share_embeddings=true needs one joint vocabulary: set data.tokenizer.joint=true "
                        "or model.share_embeddings=false")
    s = cfg.search
    if s.nbest > s.beam_size:
        problems.append(f"search.beam_size={s.beam_size}, search.nbest={s.nbest}: need 1 <= nbest <= beam_size")
    if cfg.data.src_lang == cfg.data.tgt_lang:
        problems.append(f"data.src_lang and data.tgt_lang are both {cfg.data.src_lang!r}")
    return problems


def _training_problems(cfg: Config) -> list[str]:
    t, o, tk, m = cfg.train, cfg.optim, cfg.data.tokenizer, cfg.model
    problems = []
    if cfg.data.max_len >= m.max_positions:
        problems.append(f"data.max_len={cfg.data.max_len} must be below model.max_positions={m.max_positions} "
                        "(a training sentence plus BOS/EOS must fit the positions)")
    problems += _mixture_problems(cfg.data)
    if tk.enable_sampling:
        if cfg.data.streaming:
            problems.append("data.tokenizer.enable_sampling=true re-segments the training text every epoch, which "
                            "needs it in memory: not supported with data.streaming=true")
        if tk.model_type != "unigram":
            problems.append(f"data.tokenizer.enable_sampling=true samples a unigram model's segmentations; got "
                            f"data.tokenizer.model_type={tk.model_type!r} (use unigram)")
        if tk.alpha <= 0.0:
            problems.append(f"data.tokenizer.alpha={tk.alpha}: the sampling exponent must be > 0")
        if tk.nbest_size < 2:
            problems.append(f"data.tokenizer.nbest_size={tk.nbest_size}: sample among the n >= 2 best "
                            "segmentations")
    if o.scheduler in ("cosine", "linear") and t.max_steps <= o.warmup_steps:
        problems.append(f"optim.scheduler={o.scheduler} decays over train.max_steps, which must be larger than "
                        f"optim.warmup_steps={o.warmup_steps} (got {t.max_steps})")
    if t.fit_schedule_to_time and (t.max_time_minutes <= 0 or o.scheduler not in ("cosine", "linear")):
        problems.append(f"train.fit_schedule_to_time=true fits a cosine or linear decay into train.max_time_minutes; "
                        f"got optim.scheduler={o.scheduler!r}, train.max_time_minutes={t.max_time_minutes}")
    return problems


def validate(cfg: Config, training: bool = True) -> None:
    """Check value ranges, choices, names and combinations the schema cannot express, before any
    work starts (and on every checkpoint's config before anything is built from it, R30).

    ``training=False`` (loading a model to translate) leaves out the rules that only matter while
    training (schedule length, training length filter against the positions, sampling options).

    Raises:
        ConfigError: listing every problem, each naming the key(s), the value(s) and what would work.
    """
    values = dict(flat_items(cfg))
    problems = _value_problems(values)
    if not problems:  # the combinations assume sane values
        problems = _model_problems(cfg) + (_training_problems(cfg) if training else [])
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


#: the ``key=value`` console scripts' options: key -> (lowest, highest)
OPTION_BOUNDS: dict[str, tuple[float, float]] = {
    "beam_size": (1, 1000), "nbest": (1, 1000), "batch_size": (1, 10**6), "chunk_size": (1, 10**7),
    "num_threads": (0, 1024), "n": (2, 10**6), "bootstrap_samples": (1, 10**7), "length_penalty": (-10, 10),
}


def check_options(options: Any) -> None:
    """Ranges of a console script's options (``nmt-translate``, ``nmt-evaluate``, ...).

    Raises:
        ConfigError: naming the option and the allowed range.
    """
    values = {k: v for k, v in flat_items(options) if isinstance(v, (int, float)) and not isinstance(v, bool)}
    problems = _range_problems(values, OPTION_BOUNDS)
    if problems:
        raise ConfigError("; ".join(problems))
