"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore.

Every YAML file under ``conf/`` is validated against these schemas at compose time, so a
misspelt key or a wrong type fails before any code runs; ranges, names and combinations are
checked by :func:`nmt.config_checks.validate` before any work. Entry points turn the composed
config into these dataclasses with :func:`to_config` (``OmegaConf.to_object``); modules
receive plain keyword arguments, never a config object. A checkpoint's ``config.yaml`` is read
by :func:`config_from_yaml`, which resolves nothing (RELIABILITY.md R30).

This module imports only :mod:`omegaconf` and PyYAML (cheap); Hydra is imported lazily by
:func:`register_configs` so the translation path stays light.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf

from nmt.choices import (Activation, Arch, AttentionScore, AttentionWindow, DecoderStyle, Optimizer, Positions, Precision,
                         RNNType, Scheduler)


class ConfigError(ValueError):
    """Settings that cannot work, or a config file that cannot be trusted; the message names the keys."""


class Policy(str, Enum):
    """What to do with a bad line (RELIABILITY.md R21, R22)."""

    skip = "skip"
    warn = "warn"
    error = "error"
    replace = "replace"


#: field metadata: the setting may differ between an interrupted run and its resumption (budgets,
#: logging, devices, what happens after training; R9); on a group, every key under it may
MAY_CHANGE_ON_RESUME = {"resume": True}


@dataclass
class TokenizerConfig:
    """sentencepiece options (Kudo & Richardson 2018)."""

    model_type: str = "unigram"  # unigram | bpe
    vocab_size: int = 8000  # pieces per sentencepiece model
    joint: bool = True  # one model for both languages (required by share_embeddings)
    byte_fallback: bool = True  # unknown characters become UTF-8 byte pieces instead of <unk>
    character_coverage: float = 1.0  # share of characters the model covers (1.0 for Latin scripts)
    input_sentence_size: int = 300000  # sentence pairs sampled (seeded) to train sentencepiece on, bounding its memory (docs/data.md); 0 = every pair
    num_threads: int = 1  # sentencepiece training threads; the model depends on it (kept fixed for R27)
    cache_dir: Optional[str] = field(default=None, metadata=MAY_CHANGE_ON_RESUME)  # default: <data dir>/.cache or ~/.cache/nmt
    # subword regularisation (Kudo 2018, l-best sampling; nmt/data/sampling.py): every epoch, each training
    # sentence takes one of its nbest_size best segmentations; the sentencepiece model is unchanged
    enable_sampling: bool = False  # subword regularisation of the training split (Kudo 2018), unigram only
    alpha: float = 0.3  # smoothing exponent: small = closer to uniform over the candidates
    nbest_size: int = 16  # l: candidates per sentence (>= 2); memory N x l x length int32 per side


@dataclass
class HFDataFiles:
    """``data_files`` of ``datasets.load_dataset``: a file or glob per split (None: no such split)."""

    train: Optional[str] = None  # file or glob of the training split
    validation: Optional[str] = None  # file or glob of the dev split
    test: Optional[str] = None  # file or glob of the test split


@dataclass
class TrainCorpus:
    """One training corpus of a weighted mixture (``data.train``)."""

    dir: str = ""  # folder holding {train_split}.{src_lang} and {train_split}.{tgt_lang}
    weight: float = 1.0  # pairs drawn from this corpus for each pair of a weight-1 corpus


@dataclass
class DataConfig:
    """Where the parallel text comes from and how it is cleaned."""

    corpus: str = "multi30k"  # corpus name: the folder under $NMT_DATA_DIR, and what download fetches
    dir: Optional[str] = field(default=None, metadata=MAY_CHANGE_ON_RESUME)  # default: $NMT_DATA_DIR/<corpus>, then <project>/data/<corpus>
    src_lang: str = "en"  # source language code (file suffix or column)
    tgt_lang: str = "de"  # target language code
    train_split: str = "train"  # training split name ({split}.{lang} files or hub split)
    valid_split: str = "valid"  # dev split: validation loss, BLEU, early stopping
    test_split: str = "test2016"  # split decoded and scored at the end (train.eval_test)
    download: bool = field(default=True, metadata=MAY_CHANGE_ON_RESUME)  # fetch a known corpus (multi30k) when it is missing
    train: list[TrainCorpus] = field(default_factory=list)  # several training corpora mixed by weight, [{dir: D, weight: 2}, ...]; empty: the train split of data.dir
    # Hugging Face datasets source (used instead of files when hf_name is set)
    hf_name: Optional[str] = None  # Hugging Face dataset: hub id, save_to_disk folder, or json | csv | parquet; replaces files
    hf_config: Optional[str] = None  # the dataset's configuration name (e.g. de-en)
    hf_translation_column: str = "translation"  # nested {lang: text} layout (wmt14, iwslt2017)
    hf_src_column: Optional[str] = None  # flat layout (bentrevett/multi30k): column names
    hf_tgt_column: Optional[str] = None  # flat layout: the target column
    hf_valid_split: Optional[str] = None  # hub split name if it differs (e.g. "validation")
    hf_test_split: Optional[str] = None  # hub split name of the test set if it differs
    # local files through datasets' json/csv/parquet builders (hf_name=json|csv|parquet), or a hub
    # dataset's own data_files, e.g. data.hf_data_files={train: train.jsonl, validation: dev.jsonl}
    hf_data_files: HFDataFiles = field(default_factory=HFDataFiles)
    hf_revision: Optional[str] = None  # hub revision (e.g. refs/convert/parquet for script datasets)
    hf_cache_dir: Optional[str] = None  # datasets' cache_dir (default: $HF_DATASETS_CACHE)
    num_proc: int = 1  # processes for Dataset.map tokenisation (non-streaming hf datasets)
    streaming: bool = False  # read train as a stream (hub data or {split}.{lang} files), never all in memory or on disk
    shuffle_buffer: int = 100000  # pairs read, shuffled and bucketed together (OpenNMT-py bucket_size)
    stream_spm_sentences: int = 1000000  # first N pairs of the stream train sentencepiece
    # cleaning (R19-R23); filters apply to the training split only
    on_empty: Policy = Policy.skip  # a pair with an empty side: skip | warn (skip and count) | error
    on_invalid_utf8: Policy = Policy.error  # a line that is not UTF-8: error (file, line, byte) | replace (U+FFFD) | skip
    max_len: int = 250  # sentencepiece tokens per side, training only
    max_len_ratio: float = 3.0  # max(len)/min(len) in tokens, training only (0 = off)
    max_drop_fraction: float = 0.5  # fail when filters drop more than this
    max_train_pairs: Optional[int] = None  # take the first N training pairs (debug slices)
    max_valid_pairs: Optional[int] = None  # take the first N dev pairs (debug slices)
    max_test_pairs: Optional[int] = None  # take the first N test pairs (debug slices)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def role_of(self, split: str) -> tuple[Optional[str], str]:
        """``split`` -> ``(role, split name)``. The roles ``train``/``valid``/``test`` map through
        ``*_split``; a literal name gets the role whose split it equals, else role None."""
        for role in ("train", "valid", "test"):
            if split in (role, getattr(self, f"{role}_split")):
                return role, getattr(self, f"{role}_split")
        return None, split

    def max_pairs(self, role: Optional[str]) -> Optional[int]:
        """``max_<role>_pairs`` (the first N pairs of that role's split), None for no role."""
        return getattr(self, f"max_{role}_pairs") if role else None


@dataclass
class AttentionConfig:
    """RNN attention: a score function and a window (Bahdanau et al. 2015; Luong et al. 2015 §3)."""

    score: AttentionScore = AttentionScore.additive  # RNN attention score: additive (= concat) | dot | general | scaled_dot | cosine | location
    window: AttentionWindow = AttentionWindow["global"]  # local_m, local_p: Luong et al. 2015 §3.2
    window_size: int = 10  # D: the window is [p_t - D, p_t + D]; local-p uses sigma = D / 2
    attention_dim: int = 0  # additive/local-p hidden size (0 = decoder hidden size)
    cosine_scale: float = 10.0  # initial (or fixed) scale of cosine scores
    learn_cosine_scale: bool = True  # cosine score: learn the scale g (else fixed at cosine_scale)
    max_src_len: int = 128  # location score: positions scored (longer sources get no weight beyond)


@dataclass
class RNNDecoderConfig:
    """Attentional RNN decoder."""

    style: DecoderStyle = DecoderStyle.bahdanau  # bahdanau: attend from s_{t-1} | luong: attend from h_t
    input_feeding: bool = True  # Luong et al. 2015 §3.3 (luong style only)


@dataclass
class ModelConfig:
    """Model architecture. ``arch`` picks the family; fields of the others are ignored."""

    arch: Arch = Arch.transformer  # transformer | rnn (BiRNN encoder, attentional decoder)
    # --- RNN family (arch=rnn) ---
    rnn_type: RNNType = RNNType.gru  # recurrent cell of encoder and decoder
    embed_dim: int = 256  # RNN token embedding size
    hidden_size: int = 512  # decoder hidden size; each encoder direction has hidden_size // 2
    decoder: RNNDecoderConfig = field(default_factory=RNNDecoderConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    # --- Transformer (arch=transformer); layers/dropout/sharing also apply to the RNN ---
    d_model: int = 256  # Transformer model size (embeddings, attention, residual stream)
    num_heads: int = 4  # attention heads per layer (d_model divisible by it)
    ffn_dim: int = 1024  # Transformer feed-forward inner size
    encoder_layers: int = 3  # encoder layers (RNN: stacked bidirectional layers)
    decoder_layers: int = 3  # decoder layers
    dropout: float = 0.3  # dropout on embeddings, residual connections and between RNN layers
    attention_dropout: float = 0.1  # dropout on Transformer attention weights
    activation_dropout: float = 0.1  # dropout inside the Transformer feed-forward block
    activation: Activation = Activation.relu  # feed-forward activation; swiglu/geglu are gated (Shazeer 2020)
    pre_norm: bool = False  # False: post-norm as in Vaswani et al. 2017
    positions: Positions = Positions.sinusoidal  # sinusoidal (Vaswani et al. 2017 §3.5) | learned position embeddings
    max_positions: int = 1024  # longest sequence, EOS included; longer sources are truncated when translating
    share_embeddings: bool = True  # one embedding matrix for source and target (joint vocab)
    tie_output: bool = True  # output projection = target embedding (Press & Wolf 2017)
    scale_embeddings: bool = True  # multiply embeddings by sqrt(d_model) (Vaswani §3.4)
    alignment_layer: int = -1  # decoder layer whose cross-attention is the alignment


@dataclass
class OptimConfig:
    """Adam(W) with a learning-rate schedule (Vaswani et al. 2017 §5.3)."""

    optimizer: Optimizer = Optimizer.adam  # adam (decoupled weight decay, AdamW) | sgd
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # Adam beta1, beta2
    eps: float = 1e-8  # Adam epsilon
    weight_decay: float = 1e-4  # decoupled weight decay (AdamW)
    scheduler: Scheduler = Scheduler.inverse_sqrt  # learning-rate schedule after warmup (nmt.train.optim.lr_lambda)
    warmup_steps: int = 1000  # updates of linear warmup from warmup_init_lr to lr
    warmup_init_lr: float = 1e-7  # learning rate at update 0
    min_lr: float = 0.0  # floor of the decay (inverse_sqrt, cosine, linear)
    clip_norm: float = 0.0  # 0 = no clipping; the norm is always logged


@dataclass
class AttentionPlotConfig:
    """What the Attention dashboard (and, optionally, the Images tab) gets at every validation."""

    sentences: int = 8  # probe sentences: the first N dev sentences (0 = none), unless probe= is given
    probe: Optional[str] = None  # a file of probe sentences: source[<TAB>reference[<TAB>gold Pharaoh links]] per line
    images: bool = False  # also matplotlib figures in TensorBoard's Images tab (for papers)
    layer_sentences: int = 1  # images: of the probes, the first N also get every layer's head grids (Transformer)
    every: int = 1  # images: draw them at every N-th validation (the dashboard and statistics are logged every time)
    all_layers: bool = True  # images: Transformer: every layer's head grid, self- and cross-attention
    words: bool = True  # images: also the word-level matrix (subword pieces merged)
    stats_sentences: int = 256  # dev pairs, teacher-forced with the reference, for entropy/coverage (0 = off)


@dataclass
class TrainConfig:
    """Training loop."""

    seed: int = 1  # seed of initialisation, batching and dropout (set by the top-level seed)
    max_tokens: int = 4096  # source+target-padded token budget per batch (max of the two)
    update_freq: int = 1  # gradient accumulation
    label_smoothing: float = 0.1  # epsilon of label-smoothed cross-entropy (Szegedy et al. 2016)
    max_epochs: int = field(default=100, metadata=MAY_CHANGE_ON_RESUME)  # stop after this many epochs
    max_steps: int = field(default=0, metadata=MAY_CHANGE_ON_RESUME)  # 0 = no limit
    max_time_minutes: float = field(default=0.0, metadata=MAY_CHANGE_ON_RESUME)  # wall-clock budget for training (0 = none)
    fit_schedule_to_time: bool = False  # cosine/linear: when warmup ends, shorten the decay to the updates that fit in max_time_minutes, and again after a validation if the machine slowed down (nmt.train.budget)
    valid_every_steps: int = 0  # 0 = once per epoch
    valid_every_epochs: int = 1  # validate every N epochs (when valid_every_steps is 0)
    validate_after_updates: int = 0  # no validation before this update (fairseq --validate-after-updates); the closing one always runs, and fit_schedule_to_time validates once when warmup ends to time it
    valid_max_sentences: int = 0  # decode at most N dev sentences for BLEU (0 = all)
    patience: int = field(default=10, metadata=MAY_CHANGE_ON_RESUME)  # validations without BLEU improvement before stopping (0 = off)
    log_every_steps: int = field(default=100, metadata=MAY_CHANGE_ON_RESUME)  # training loss, learning rate and speed to TensorBoard every N updates
    keep_last: int = field(default=2, metadata=MAY_CHANGE_ON_RESUME)  # checkpoints kept besides the best one
    average_last: int = field(default=0, metadata=MAY_CHANGE_ON_RESUME)  # at the end, average the last N checkpoints; kept only if dev BLEU improves (0 = off)
    average_best: int = field(default=0, metadata=MAY_CHANGE_ON_RESUME)  # at the end, average the best N checkpoints by dev BLEU (kept while training); kept only if better (0 = off)
    num_threads: int = field(default=0, metadata=MAY_CHANGE_ON_RESUME)  # torch intra-op threads (0 = torch default)
    keep_freed_memory: bool = True  # CPU, glibc: freed tensors stay in the heap for reuse instead of page-faulting anew each update (nmt.train.allocator)
    device: str = field(default="cpu", metadata=MAY_CHANGE_ON_RESUME)  # cpu | cuda | auto
    eval_test: bool = field(default=True, metadata=MAY_CHANGE_ON_RESUME)  # decode the test split with beam search at the end
    tune_length_penalty: list[float] = field(default_factory=list, metadata=MAY_CHANGE_ON_RESUME)  # GNMT alphas tried on dev at the end
    num_samples: int = field(default=3, metadata=MAY_CHANGE_ON_RESUME)  # fixed dev sentences shown in TensorBoard
    attention: AttentionPlotConfig = field(default_factory=AttentionPlotConfig, metadata=MAY_CHANGE_ON_RESUME)
    progress_bar: Optional[bool] = field(default=None, metadata=MAY_CHANGE_ON_RESUME)  # None = only on a terminal
    save_every_steps: int = field(default=0, metadata=MAY_CHANGE_ON_RESUME)  # also checkpoint every N updates without validating (0 = only at validation)
    resume: bool = field(default=True, metadata=MAY_CHANGE_ON_RESUME)  # continue from the run directory's latest complete checkpoint when there is one
    overwrite: bool = field(default=False, metadata=MAY_CHANGE_ON_RESUME)  # start over in a run directory that holds a finished run (results.json); an unfinished one resumes
    dist_timeout_minutes: float = field(default=30.0, metadata=MAY_CHANGE_ON_RESUME)  # torchrun: a collective waiting longer than this ends every process (rank 0 validates while the others wait)
    max_bad_steps: int = field(default=10, metadata=MAY_CHANGE_ON_RESUME)  # stop (non-zero) after this many non-finite updates in a row (R13)
    precision: Precision = Precision.fp32  # bf16/fp16: autocast for GPUs (fp16 adds dynamic loss scaling)
    fp16_init_scale: float = 65536.0  # first loss scale of fp16 training (halved at each overflow)
    preflight: bool = field(default=True, metadata=MAY_CHANGE_ON_RESUME)  # run the largest batch once before step 1 so an oversized max_tokens fails at once


@dataclass
class SearchConfig:
    """Decoding (Wu et al. 2016 eq. 14 length penalty)."""

    beam_size: int = 5  # hypotheses kept per sentence (1 = greedy)
    length_penalty: float = 1.0  # GNMT alpha; 0 = raw log-probability
    max_len_a: float = 1.2  # max output length = a * src_len + b
    max_len_b: int = 10  # see max_len_a
    nbest: int = 1  # hypotheses returned per sentence
    batch_size: int = field(default=128, metadata=MAY_CHANGE_ON_RESUME)  # sentences per decoding batch


@dataclass
class Config:
    """Root config of ``nmt-train``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    name: str = field(default="nmt", metadata=MAY_CHANGE_ON_RESUME)  # run name, used in the output directory
    seed: int = 1  # shorthand for sweeps (nmt-train -m seed=1,2,3): conf/train/default.yaml sets train.seed: ${seed}


def resume_allowed(schema=None, prefix: str = "") -> tuple[str, ...]:
    """The keys marked :data:`MAY_CHANGE_ON_RESUME` (a group's key ends in ``.``: all under it)."""
    from dataclasses import fields, is_dataclass

    out = []
    for f in fields(schema or Config):
        key = f"{prefix}{f.name}"
        group = isinstance(f.default_factory, type) and is_dataclass(f.default_factory)
        if f.metadata.get("resume"):
            out.append(key + "." if group else key)
        elif group:
            out += resume_allowed(f.default_factory, key + ".")
    return tuple(out)


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (``base_*`` names used in ``defaults``)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="optim", name="base_optim", node=OptimConfig)
    cs.store(group="train", name="base_train", node=TrainConfig)
    cs.store(group="search", name="base_search", node=SearchConfig)


def to_config(cfg: Any) -> Config:
    """Composed ``DictConfig`` -> :class:`Config` (raises on missing values)."""
    obj = OmegaConf.to_object(cfg)
    if isinstance(obj, dict):  # hydra-internal keys stripped by the caller
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))
    return obj  # type: ignore[return-value]


def config_to_yaml(cfg: Config) -> str:
    """Serialise a :class:`Config` (stored inside every checkpoint)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases (``*name``): an alias bomb would take exponential time."""

    def compose_node(self, parent, index):  # noqa: D102 (yaml.composer.Composer API)
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"YAML aliases (*name) are not allowed ({mark})")
        return super().compose_node(parent, index)


def _find_interpolation(node: Any, path: str = "") -> Optional[str]:
    """The dotted key of the first string (key or value) holding ``${``, or None."""
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{path}.{k}" if path else str(k)
            if "${" in str(k):
                return key
            found = _find_interpolation(v, key)
            if found:
                return found
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found = _find_interpolation(v, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(node, str) and "${" in node:
        return path
    return None


def config_from_yaml(text: str, source: str = "config.yaml") -> Config:
    """Inverse of :func:`config_to_yaml` for text that may come from anyone (a shared checkpoint).

    The YAML is read with a safe loader (no tags, no aliases) and is refused when any string holds
    ``${``: OmegaConf would resolve it (``${oc.env:SECRET}``), and nmt never writes one (R30).
    Types are checked against the schema; value ranges are :func:`nmt.config_checks.validate`'s.

    Raises:
        ConfigError: naming ``source`` and the key: not YAML, an interpolation, an unknown key
            or a wrong type.
    """
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    key = _find_interpolation(data)
    if key is not None:
        raise ConfigError(f"{source}: {key} holds an interpolation ('${{...}}'); a checkpoint's config is "
                          "plain values, and nmt does not resolve them")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(data))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except Exception as err:  # omegaconf raises several error types
        raise ConfigError(f"{source}: does not match this version of nmt: {str(err).splitlines()[0]}") from None


def parse_cli(schema: type, argv: list[str]) -> Any:
    """Parse ``key=value`` arguments into ``schema`` (a dataclass) with type checking.

    Arguments that do not contain ``=`` are returned separately as positional text.
    Raises ``SystemExit(2)`` with the offending key when a key is unknown or a value has
    the wrong type.
    """
    dotlist = [a for a in argv if "=" in a and not a.startswith("-")]
    base = OmegaConf.structured(schema)
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(dotlist))
        return OmegaConf.to_object(merged)
    except Exception as err:  # omegaconf raises several error types
        raise SystemExit(f"error: {err}".splitlines()[0] + f"\n(valid keys: {', '.join(base.keys())})")
