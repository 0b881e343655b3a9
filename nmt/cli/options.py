"""The ``key=value`` options of the console scripts other than ``nmt-train`` (which Hydra
configures from :mod:`nmt.config`), as typed dataclasses: an unknown key or a wrong type fails
when the command line is parsed (:func:`nmt.config.parse_cli`), a value out of range right after
(:func:`nmt.config_checks.check_options`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING


@dataclass
class AttentionOutputConfig:
    """The attention of ``nmt-translate``'s translations of the user's own sentences."""

    logdir: Optional[str] = None  # TensorBoard log directory: the Attention dashboard's data (one record per line)
    images: bool = False  # also matplotlib figures in that logdir's Images tab
    png_dir: Optional[str] = None  # directory for one PNG file per figure
    ascii: bool = False  # print a character heatmap per sentence on stderr
    words: bool = True  # figures: also the word-level matrix (subword pieces merged)
    all_layers: bool = True  # figures: Transformer: every layer's head grid, self- and cross-attention


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
    length_penalty: Optional[float] = None  # GNMT alpha (default: the checkpoint's search config)
    batch_size: int = 64  # sentences per decoding batch
    nbest: int = 1  # hypotheses per input line
    format: str = "plain"  # plain | score (score<TAB>text) | tsv (id<TAB>rank<TAB>score<TAB>text) | jsonl
    scores: bool = False  # alias of format=score
    print_alignment: bool = False  # append a tab and Pharaoh word links (src-tgt, 0-based) to each line
    chunk_size: int = 1000  # input lines read, translated and written (flushed) at a time
    progress: str = "auto"  # progress bar on stderr: auto (only when stderr is a terminal) | true | false
    alignment_shift: bool = False  # links from the step where the word is the decoder input (shift-att)
    attention: AttentionOutputConfig = field(default_factory=AttentionOutputConfig)
    device: str = "cpu"  # cpu | cuda
    num_threads: int = 0  # torch intra-op threads (0 = torch default)


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

    ckpt: str = MISSING  # checkpoint or run directory (its best checkpoint)
    src: str = MISSING  # source sentences, one per line
    tgt: str = MISSING  # their translations, line by line (teacher-forced)
    output: Optional[str] = None  # Pharaoh lines; default: stdout
    logdir: Optional[str] = None  # TensorBoard log directory: every pair's attention for the Attention dashboard
    gold: Optional[str] = None  # gold links (i-j sure, i?j / ipj / i-j-P possible) -> AER, precision, recall
    gold_reversed: bool = False  # gold links are target-source (e.g. a de-en gold file with an en->de model)
    layer: Optional[int] = None  # decoder layer (default: the model's alignment layer)
    head: str = "average"  # average | best (lowest AER on gold over the heads and head averages of every layer, or of layer) | index
    shift: bool = False  # read token t from the step where it is the decoder input (Chen et al. 2020)
    batch_size: int = 32  # sentence pairs per batch
    device: str = "cpu"  # cpu | cuda
    num_threads: int = 0  # torch intra-op threads (0 = torch default)


@dataclass
class EvaluateConfig:
    """``nmt-evaluate`` options. Lists are comma-separated (``split=test2016,test2017``)."""

    ckpt: Optional[str] = None  # checkpoint or run dir; a comma list decodes with an ensemble
    baseline: Optional[str] = None  # a second system (checkpoint or ensemble) for the paired bootstrap test
    hyp: Optional[str] = None  # precomputed hypotheses instead of ckpt, one file per test set
    baseline_hyp: Optional[str] = None  # precomputed baseline hypotheses, one file per test set
    split: Optional[str] = None  # split names (default: the data config's test split unless src/ref are given)
    data_dir: Optional[str] = None  # folder of {split}.{lang} files (default: $NMT_DATA_DIR/<corpus>)
    hf_name: Optional[str] = None  # read split= from this Hugging Face dataset (a checkpoint never chooses what is fetched)
    src: Optional[str] = None  # explicit source files (paired with ref)
    ref: Optional[str] = None  # explicit reference files, as many as src
    output: Optional[str] = None  # hypotheses files, one per set; default: <run>/hyp.<set>
    bootstrap_samples: int = 1000  # paired bootstrap resamples (sacrebleu's default)
    moses_bleu: Optional[str] = None  # LANG (e.g. de): also lowercased BLEU on Moses tokens, the Multi30k papers' multi-bleu.perl metric (needs the moses extra)
    beam_size: Optional[int] = None  # default: the checkpoint's search config
    length_penalty: Optional[float] = None  # GNMT alpha (default: the checkpoint's search config)
    batch_size: int = 64  # sentences per decoding batch
    device: str = "cpu"  # cpu | cuda
    num_threads: int = 0  # torch intra-op threads (0 = torch default)


@dataclass
class AverageConfig:
    """``nmt-average`` options: average checkpoints of a run (Vaswani et al. 2017 §6.1)."""

    run: str = MISSING  # run directory (or its checkpoints/ directory)
    n: int = 5  # number of checkpoints averaged
    by: str = "bleu"  # bleu: the N with the best dev BLEU in meta.json | last: the N latest steps
    out: Optional[str] = None  # default: <run>/checkpoints/averaged
    force: bool = False  # replace an existing checkpoint at out that nmt-average did not write
    keep: str = "better"  # better: the average becomes "best" only if its dev BLEU beats it | always
    data_dir: Optional[str] = None  # folder of {split}.{lang} files (default: $NMT_DATA_DIR/<corpus>)
    hf_name: Optional[str] = None  # read the dev split from this Hugging Face dataset instead
    beam_size: Optional[int] = None  # default: the checkpoint's search settings
    length_penalty: Optional[float] = None  # GNMT alpha for the dev BLEU (default: the checkpoint's search config)
    batch_size: int = 64  # sentences per decoding batch
    device: str = "cpu"  # cpu | cuda
    num_threads: int = 0  # torch intra-op threads (0 = torch default)
