"""The settings that take one of a fixed set of values, as Enums (issue 38): Hydra refuses any
other value when it composes the config, and each compares equal to its string."""
from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A setting with a fixed set of values: Hydra refuses any other at compose time, and it
    compares equal to (and prints as) its string, ``cfg.model.arch == "rnn"``."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Arch(Choice):
    transformer = "transformer"
    rnn = "rnn"


class RNNType(Choice):
    gru = "gru"
    lstm = "lstm"


class DecoderStyle(Choice):
    bahdanau = "bahdanau"  # Bahdanau et al. 2015 §3.1: attend from s_{t-1}
    luong = "luong"  # Luong et al. 2015 §3: attend from h_t


class AttentionScore(Choice):
    additive = "additive"  # = Luong's concat (Bahdanau et al. 2015 eq. 6)
    concat = "concat"
    dot = "dot"
    general = "general"
    scaled_dot = "scaled_dot"
    cosine = "cosine"
    location = "location"


#: ``global`` is a Python keyword, so this one is built by name
AttentionWindow = Choice("AttentionWindow", {"global": "global", "local_m": "local_m", "local_p": "local_p"})


class Activation(Choice):
    relu = "relu"
    gelu = "gelu"
    swiglu = "swiglu"  # gated (Shazeer 2020): fc1 is (2 * ffn_dim, d_model)
    geglu = "geglu"


class Positions(Choice):
    sinusoidal = "sinusoidal"  # Vaswani et al. 2017 §3.5
    learned = "learned"


class Optimizer(Choice):
    adam = "adam"  # decoupled weight decay, i.e. AdamW
    sgd = "sgd"


class Scheduler(Choice):
    inverse_sqrt = "inverse_sqrt"
    constant = "constant"
    noam = "noam"
    cosine = "cosine"  # decays over train.max_steps
    linear = "linear"


class Precision(Choice):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def _values(choice) -> tuple[str, ...]:
    return tuple(member.value for member in choice)


ATTENTION_SCORES = _values(AttentionScore)
ATTENTION_WINDOWS = _values(AttentionWindow)
RNN_STYLES = _values(DecoderStyle)
RNN_TYPES = _values(RNNType)
SCHEDULERS = _values(Scheduler)
