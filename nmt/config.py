"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore.

Every YAML file under ``conf/`` is validated against these schemas at compose time, so a
misspelt key or a wrong type fails before any code runs. Entry points turn the composed
config into these dataclasses with :func:`to_config` (``OmegaConf.to_object``); modules
receive plain keyword arguments, never a config object.

This module imports only :mod:`omegaconf` (cheap); Hydra is imported lazily by
:func:`register_configs` so the translation path stays light.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf


class Policy(str, Enum):
    """What to do with a bad line (RELIABILITY.md R21, R22)."""

    skip = "skip"
    warn = "warn"
    error = "error"
    replace = "replace"


@dataclass
class TokenizerConfig:
    """sentencepiece options (Kudo & Richardson 2018)."""

    model_type: str = "unigram"  # unigram | bpe
    vocab_size: int = 8000
    joint: bool = True  # one model for both languages (required by share_embeddings)
    byte_fallback: bool = True
    character_coverage: float = 1.0
    input_sentence_size: int = 0  # 0 = use every training sentence
    num_threads: int = 1  # sentencepiece training threads; the model depends on it (kept fixed for R27)
    cache_dir: Optional[str] = None  # default: <data dir>/.cache or ~/.cache/nmt
    # subword regularisation of the training split (Kudo 2018, l-best sampling; nmt/data/sampling.py):
    # every epoch, each training sentence takes one of its nbest_size best segmentations, drawn
    # with probability ∝ P(x)^alpha; dev, test and translation keep the best one. Not part of the
    # model: the trained sentencepiece model is unchanged. Unigram models only. On Multi30k (8k
    # pieces) alpha 0.3 / nbest 16 resegments ~57% of the sentences per side and adds ~4% tokens
    # (alpha 0.5: ~30% and ~2%; alpha 0.2: ~73% and ~6%).
    enable_sampling: bool = False
    alpha: float = 0.3  # smoothing exponent: small = closer to uniform over the candidates
    nbest_size: int = 16  # l: candidates per sentence (>= 2); memory N x l x length int32 per side


@dataclass
class HFDataFiles:
    """``data_files`` of ``datasets.load_dataset``: a file or glob per split (None: no such split)."""

    train: Optional[str] = None
    validation: Optional[str] = None
    test: Optional[str] = None


@dataclass
class DataConfig:
    """Where the parallel text comes from and how it is cleaned."""

    corpus: str = "multi30k"
    dir: Optional[str] = None  # default: $NMT_DATA_DIR/<corpus>, then <project>/data/<corpus>
    src_lang: str = "en"
    tgt_lang: str = "de"
    train_split: str = "train"
    valid_split: str = "valid"
    test_split: str = "test2016"
    download: bool = True  # fetch a known corpus (multi30k) when it is missing
    # Hugging Face datasets source (used instead of files when hf_name is set)
    hf_name: Optional[str] = None
    hf_config: Optional[str] = None
    hf_translation_column: str = "translation"  # nested {lang: text} layout (wmt14, iwslt2017)
    hf_src_column: Optional[str] = None  # flat layout (bentrevett/multi30k): column names
    hf_tgt_column: Optional[str] = None
    hf_valid_split: Optional[str] = None  # hub split name if it differs (e.g. "validation")
    hf_test_split: Optional[str] = None
    # local files through datasets' json/csv/parquet builders (hf_name=json|csv|parquet), or a hub
    # dataset's own data_files, e.g. data.hf_data_files={train: train.jsonl, validation: dev.jsonl}
    hf_data_files: HFDataFiles = field(default_factory=HFDataFiles)
    hf_revision: Optional[str] = None  # hub revision (e.g. refs/convert/parquet for script datasets)
    hf_cache_dir: Optional[str] = None  # datasets' cache_dir (default: $HF_DATASETS_CACHE)
    num_proc: int = 1  # processes for Dataset.map tokenisation (non-streaming hf datasets)
    # streaming (hf_name only): read train as a datasets.IterableDataset, never all in memory
    streaming: bool = False
    shuffle_buffer: int = 100000  # pairs read, shuffled and bucketed together (OpenNMT-py bucket_size)
    stream_spm_sentences: int = 1000000  # first N pairs of the stream train sentencepiece
    # cleaning (R19-R23); filters apply to the training split only
    on_empty: Policy = Policy.skip
    on_invalid_utf8: Policy = Policy.error
    max_len: int = 250  # sentencepiece tokens per side, training only
    max_len_ratio: float = 3.0  # max(len)/min(len) in tokens, training only (0 = off)
    max_drop_fraction: float = 0.5  # fail when filters drop more than this
    max_train_pairs: Optional[int] = None  # take the first N training pairs (debug slices)
    max_valid_pairs: Optional[int] = None
    max_test_pairs: Optional[int] = None
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


ATTENTION_SCORES = ("additive", "concat", "dot", "general", "scaled_dot", "cosine", "location")
ATTENTION_WINDOWS = ("global", "local_m", "local_p")
RNN_STYLES = ("bahdanau", "luong")
RNN_TYPES = ("gru", "lstm")
SCHEDULERS = ("inverse_sqrt", "constant", "noam", "cosine", "linear")


@dataclass
class AttentionConfig:
    """RNN attention: a score function and a window (Bahdanau et al. 2015; Luong et al. 2015 §3)."""

    score: str = "additive"  # additive (= Luong concat) | dot | general | scaled_dot | cosine | location
    window: str = "global"  # global | local_m | local_p (Luong et al. 2015 §3.2)
    window_size: int = 10  # D: the window is [p_t - D, p_t + D]; local-p uses sigma = D / 2
    attention_dim: int = 0  # additive/local-p hidden size (0 = decoder hidden size)
    cosine_scale: float = 10.0  # initial (or fixed) scale of cosine scores
    learn_cosine_scale: bool = True
    max_src_len: int = 128  # location score: positions scored (longer sources get no weight beyond)


@dataclass
class RNNDecoderConfig:
    """Attentional RNN decoder."""

    style: str = "bahdanau"  # bahdanau (§3.1, attend from s_{t-1}) | luong (attend from h_t)
    input_feeding: bool = True  # Luong et al. 2015 §3.3 (luong style only)


@dataclass
class ModelConfig:
    """Model architecture. ``arch`` picks the family; fields of the others are ignored."""

    arch: str = "transformer"  # transformer | rnn
    # --- RNN family (arch=rnn) ---
    rnn_type: str = "gru"  # gru | lstm
    embed_dim: int = 256
    hidden_size: int = 512  # decoder hidden size; each encoder direction has hidden_size // 2
    decoder: RNNDecoderConfig = field(default_factory=RNNDecoderConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    # --- Transformer (arch=transformer); layers/dropout/sharing also apply to the RNN ---
    d_model: int = 256
    num_heads: int = 4
    ffn_dim: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    dropout: float = 0.3
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    activation: str = "relu"  # relu | gelu | swiglu | geglu (gated: Shazeer 2020; fc1 is (2*ffn_dim, d_model))
    pre_norm: bool = False  # False: post-norm as in Vaswani et al. 2017
    positions: str = "sinusoidal"  # sinusoidal | learned
    max_positions: int = 1024
    share_embeddings: bool = True  # one embedding matrix for source and target (joint vocab)
    tie_output: bool = True  # output projection = target embedding (Press & Wolf 2017)
    scale_embeddings: bool = True  # multiply embeddings by sqrt(d_model) (Vaswani §3.4)
    alignment_layer: int = -1  # decoder layer whose cross-attention is the alignment


@dataclass
class OptimConfig:
    """Adam(W) with a learning-rate schedule (Vaswani et al. 2017 §5.3)."""

    optimizer: str = "adam"  # adam (decoupled weight decay, i.e. AdamW) | sgd
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    weight_decay: float = 1e-4
    scheduler: str = "inverse_sqrt"  # inverse_sqrt | constant | noam | cosine | linear (decay over train.max_steps)
    warmup_steps: int = 1000
    warmup_init_lr: float = 1e-7
    min_lr: float = 0.0
    clip_norm: float = 0.0  # 0 = no clipping; the norm is always logged


@dataclass
class AttentionPlotConfig:
    """Alignment figures and attention statistics logged to TensorBoard at validation."""

    sentences: int = 4  # the first N dev sentences: alignment figures at every validation (0 = no figures)
    layer_sentences: int = 1  # of those, the first N also get every layer's head grids (Transformer)
    every: int = 1  # plot at every N-th validation (the statistics are logged every time)
    all_layers: bool = True  # Transformer: every layer's head grid, self- and cross-attention
    words: bool = True  # also the word-level matrix (subword pieces merged)
    stats_sentences: int = 256  # dev pairs, teacher-forced with the reference, for entropy/coverage (0 = off)


@dataclass
class TrainConfig:
    """Training loop."""

    seed: int = 1
    max_tokens: int = 4096  # source+target-padded token budget per batch (max of the two)
    update_freq: int = 1  # gradient accumulation
    label_smoothing: float = 0.1
    max_epochs: int = 100
    max_steps: int = 0  # 0 = no limit
    max_time_minutes: float = 0.0  # wall-clock budget for training (0 = none)
    fit_schedule_to_time: bool = False  # cosine/linear: when warmup ends, shorten the decay to the updates that fit in max_time_minutes, and again after a validation if the machine slowed down (nmt.train.budget)
    valid_every_steps: int = 0  # 0 = once per epoch
    valid_every_epochs: int = 1
    validate_after_updates: int = 0  # no validation before this update (fairseq --validate-after-updates); the closing one always runs, and fit_schedule_to_time validates once when warmup ends to time it
    valid_max_sentences: int = 0  # decode at most N dev sentences for BLEU (0 = all)
    patience: int = 10  # validations without BLEU improvement before stopping (0 = off)
    log_every_steps: int = 100
    keep_last: int = 2
    average_last: int = 0  # at the end, average the last N checkpoints; kept only if dev BLEU improves (0 = off)
    average_best: int = 0  # at the end, average the best N checkpoints by dev BLEU (kept while training); kept only if better (0 = off)
    num_threads: int = 0  # torch intra-op threads (0 = torch default)
    keep_freed_memory: bool = True  # CPU, glibc: freed tensors stay in the heap for reuse instead of page-faulting anew each update (nmt.train.allocator)
    device: str = "cpu"  # cpu | cuda | auto
    eval_test: bool = True  # decode the test split with beam search at the end
    tune_length_penalty: list[float] = field(default_factory=list)  # GNMT alphas tried on dev at the end
    num_samples: int = 3  # fixed dev sentences shown in TensorBoard
    attention: AttentionPlotConfig = field(default_factory=AttentionPlotConfig)
    progress_bar: Optional[bool] = None  # None = only on a terminal
    save_every_steps: int = 0  # also checkpoint every N updates without validating (0 = only at validation)
    resume: bool = True  # continue from the run directory's latest complete checkpoint when there is one
    overwrite: bool = False  # start over in a run directory that holds a finished run (deletes its outputs)
    max_bad_steps: int = 10  # stop (non-zero) after this many non-finite updates in a row (R13)
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast for GPUs (fp16 adds dynamic loss scaling); fp32 is fastest on CPUs without AMX
    fp16_init_scale: float = 65536.0  # first loss scale of fp16 training (halved at each overflow)
    preflight: bool = True  # run the largest batch once before step 1 so an oversized max_tokens fails at once


@dataclass
class SearchConfig:
    """Decoding (Wu et al. 2016 eq. 14 length penalty)."""

    beam_size: int = 5
    length_penalty: float = 1.0  # GNMT alpha; 0 = raw log-probability
    max_len_a: float = 1.2  # max output length = a * src_len + b
    max_len_b: int = 10
    nbest: int = 1
    batch_size: int = 128  # sentences per decoding batch


@dataclass
class Config:
    """Root config of ``nmt-train``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    name: str = "nmt"  # run name, used in the output directory
    seed: int = 1  # shorthand for sweeps (nmt-train -m seed=1,2,3): conf/train/default.yaml sets train.seed: ${seed}


@dataclass
class AttentionOutputConfig:
    """Alignment figures of ``nmt-translate`` for the user's own sentences."""

    logdir: Optional[str] = None  # TensorBoard log directory to write the figures into
    png_dir: Optional[str] = None  # directory for one PNG file per figure
    ascii: bool = False  # print a character heatmap per sentence on stderr
    words: bool = True  # also the word-level matrix (subword pieces merged)
    all_layers: bool = True  # Transformer: every layer's head grid, self- and cross-attention


@dataclass
class TranslateConfig:
    """``nmt-translate`` options (key=value on the command line)."""

    ckpt: Optional[str] = None  # checkpoint or run directory (its best checkpoint); several, comma-separated: an ensemble
    engine: str = "torch"  # torch | ctranslate2 (a model directory written by nmt-export, given as model=DIR)
    model: Optional[str] = None  # CTranslate2 model directory (engine=ctranslate2)
    compute_type: str = "default"  # CTranslate2 compute type (default: the stored weights' type; int8, float32, ...)
    input: Optional[str] = None  # file to translate; default: arguments, else stdin
    output: Optional[str] = None  # file to write; default: stdout
    beam_size: Optional[int] = None  # default: the checkpoint's search config
    length_penalty: Optional[float] = None
    batch_size: int = 64
    nbest: int = 1
    format: str = "plain"  # plain | score (score<TAB>text) | tsv (id<TAB>rank<TAB>score<TAB>text) | jsonl
    scores: bool = False  # alias of format=score
    print_alignment: bool = False  # append a tab and Pharaoh word links (src-tgt, 0-based) to each line
    chunk_size: int = 1000  # input lines read, translated and written (flushed) at a time
    progress: str = "auto"  # progress bar on stderr: auto (only when stderr is a terminal) | true | false
    alignment_shift: bool = False  # links from the step where the word is the decoder input (shift-att)
    attention: AttentionOutputConfig = field(default_factory=AttentionOutputConfig)
    device: str = "cpu"
    num_threads: int = 0


@dataclass
class ExportConfig:
    """``nmt-export`` options: convert a checkpoint for another inference engine."""

    ckpt: str = MISSING  # checkpoint directory or run directory (best checkpoint is used)
    out: str = MISSING  # output directory
    format: str = "ctranslate2"  # the only format so far
    quantization: Optional[str] = None  # CTranslate2 weight type: int8, int16, float16, ... (default float32)
    force: bool = False  # overwrite a non-empty out


@dataclass
class AlignConfig:
    """``nmt-align`` options: forced alignment of given translations (and AER against gold)."""

    ckpt: str = MISSING
    src: str = MISSING  # source sentences, one per line
    tgt: str = MISSING  # their translations, line by line (teacher-forced)
    output: Optional[str] = None  # Pharaoh lines; default: stdout
    gold: Optional[str] = None  # gold links (i-j sure, i?j / ipj / i-j-P possible) -> AER, precision, recall
    gold_reversed: bool = False  # gold links are target-source (e.g. a de-en gold file with an en->de model)
    layer: Optional[int] = None  # decoder layer (default: the model's alignment layer)
    head: str = "average"  # average | best (lowest AER on gold over the heads and head averages of every layer, or of layer) | index
    shift: bool = False  # read token t from the step where it is the decoder input (Chen et al. 2020)
    batch_size: int = 32
    device: str = "cpu"
    num_threads: int = 0


@dataclass
class EvaluateConfig:
    """``nmt-evaluate`` options. Lists are comma-separated (``split=test2016,test2017``)."""

    ckpt: Optional[str] = None  # checkpoint or run dir; a comma list decodes with an ensemble
    baseline: Optional[str] = None  # a second system (checkpoint or ensemble) for the paired bootstrap test
    hyp: Optional[str] = None  # precomputed hypotheses instead of ckpt, one file per test set
    baseline_hyp: Optional[str] = None  # precomputed baseline hypotheses, one file per test set
    split: Optional[str] = None  # split names (default: the data config's test split unless src/ref are given)
    data_dir: Optional[str] = None  # default: the checkpoint's data config
    src: Optional[str] = None  # explicit source files (paired with ref)
    ref: Optional[str] = None  # explicit reference files, as many as src
    output: Optional[str] = None  # hypotheses files, one per set; default: <run>/hyp.<set>
    bootstrap_samples: int = 1000  # paired bootstrap resamples (sacrebleu's default)
    moses_bleu: Optional[str] = None  # LANG (e.g. de): also lowercased BLEU on Moses-tokenised text, the Multi30k
    # papers' multi-bleu.perl metric (nmt.evaluate.moses_tokenized_bleu; needs the moses extra)
    beam_size: Optional[int] = None
    length_penalty: Optional[float] = None
    batch_size: int = 64
    device: str = "cpu"
    num_threads: int = 0


@dataclass
class AverageConfig:
    """``nmt-average`` options: average checkpoints of a run (Vaswani et al. 2017 §6.1)."""

    run: str = MISSING  # run directory (or its checkpoints/ directory)
    n: int = 5  # number of checkpoints averaged
    by: str = "bleu"  # bleu: the N with the best dev BLEU in meta.json | last: the N latest steps
    out: Optional[str] = None  # default: <run>/checkpoints/averaged
    keep: str = "better"  # better: the average becomes "best" only if its dev BLEU beats it | always
    data_dir: Optional[str] = None  # default: the run's data config
    beam_size: Optional[int] = None  # default: the checkpoint's search settings
    length_penalty: Optional[float] = None
    batch_size: int = 64
    device: str = "cpu"
    num_threads: int = 0


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


class ConfigError(ValueError):
    """A combination of settings that cannot work; the message names the keys."""


def validate(cfg: Config) -> None:
    """Check combinations that the schema cannot express, before any work starts.

    Raises:
        ConfigError: naming the key(s), the value(s) and what would work.
    """
    m, t, o, s = cfg.model, cfg.train, cfg.optim, cfg.search
    problems = []
    if m.arch not in ("transformer", "rnn"):
        problems.append(f"model.arch={m.arch!r}: expected transformer or rnn")
    if m.arch == "transformer":
        if m.num_heads < 1 or m.d_model % m.num_heads:
            problems.append(f"model.d_model={m.d_model} is not divisible by model.num_heads={m.num_heads}")
        default = AttentionConfig()
        if (m.attention.window, m.attention.score) != (default.window, default.score):
            problems.append(f"model.attention (score={m.attention.score}, window={m.attention.window}) configures "
                            "RNN attention, but model.arch=transformer uses multi-head scaled dot-product "
                            "attention; use model=rnn for Luong/Bahdanau/local attention")
    if m.arch == "rnn":
        if m.rnn_type not in RNN_TYPES:
            problems.append(f"model.rnn_type={m.rnn_type!r}: expected one of {RNN_TYPES}")
        if m.decoder.style not in RNN_STYLES:
            problems.append(f"model.decoder.style={m.decoder.style!r}: expected one of {RNN_STYLES}")
        if m.hidden_size % 2:
            problems.append(f"model.hidden_size={m.hidden_size} must be even: each encoder direction gets half")
        if m.attention.score not in ATTENTION_SCORES:
            problems.append(f"model.attention.score={m.attention.score!r}: expected one of {ATTENTION_SCORES}")
        if m.attention.window not in ATTENTION_WINDOWS:
            problems.append(f"model.attention.window={m.attention.window!r}: expected one of {ATTENTION_WINDOWS}")
        if m.attention.window != "global" and m.attention.window_size < 1:
            problems.append(f"model.attention.window_size={m.attention.window_size}: local attention needs D >= 1")
    if m.share_embeddings and not cfg.data.tokenizer.joint:
        problems.append("model.share_embeddings=true needs one joint vocabulary: set data.tokenizer.joint=true "
                        "or model.share_embeddings=false")
    tk = cfg.data.tokenizer
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
    if o.scheduler not in SCHEDULERS:
        problems.append(f"optim.scheduler={o.scheduler!r}: expected one of {SCHEDULERS}")
    if o.scheduler in ("cosine", "linear") and t.max_steps <= o.warmup_steps:
        problems.append(f"optim.scheduler={o.scheduler} decays over train.max_steps, which must be larger than "
                        f"optim.warmup_steps={o.warmup_steps} (got {t.max_steps})")
    if t.fit_schedule_to_time and (t.max_time_minutes <= 0 or o.scheduler not in ("cosine", "linear")):
        problems.append(f"train.fit_schedule_to_time=true fits a cosine or linear decay into train.max_time_minutes; "
                        f"got optim.scheduler={o.scheduler!r}, train.max_time_minutes={t.max_time_minutes}")
    if t.validate_after_updates < 0 or t.valid_every_epochs < 1 or t.valid_every_steps < 0:
        problems.append(f"train.validate_after_updates={t.validate_after_updates}, train.valid_every_epochs="
                        f"{t.valid_every_epochs}, train.valid_every_steps={t.valid_every_steps}: need >= 0, >= 1, >= 0")
    if t.max_tokens <= 0 or t.update_freq < 1:
        problems.append(f"train.max_tokens={t.max_tokens} must be > 0 and train.update_freq={t.update_freq} >= 1")
    if s.beam_size < 1 or s.nbest < 1 or s.nbest > s.beam_size:
        problems.append(f"search.beam_size={s.beam_size}, search.nbest={s.nbest}: need 1 <= nbest <= beam_size")
    if cfg.data.src_lang == cfg.data.tgt_lang:
        problems.append(f"data.src_lang and data.tgt_lang are both {cfg.data.src_lang!r}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def config_to_yaml(cfg: Config) -> str:
    """Serialise a :class:`Config` (stored inside every checkpoint)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def config_from_yaml(text: str) -> Config:
    """Inverse of :func:`config_to_yaml`; unknown keys raise ``omegaconf`` errors."""
    loaded = OmegaConf.create(text)
    merged = OmegaConf.merge(OmegaConf.structured(Config), loaded)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


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
