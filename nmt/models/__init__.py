"""Model construction. ``build_model`` reads the model config and passes plain arguments down."""
from __future__ import annotations

from typing import Callable

from nmt.config import ModelConfig
from nmt.models.embeddings import PositionalEncoding, TokenEmbedding
from nmt.models.rnn import RNNDecoder, RNNEncoder
from nmt.models.rnn_attention import RNNAttention
from nmt.models.seq2seq import Seq2Seq
from nmt.models.transformer import TransformerDecoder, TransformerEncoder


def embeddings(cfg: ModelConfig, src_vocab: int, tgt_vocab: int, dim: int, scale: bool
               ) -> tuple[TokenEmbedding, TokenEmbedding]:
    """Source and target embeddings: one shared matrix with ``model.share_embeddings``.

    Raises:
        ValueError: shared embeddings but vocabularies of different sizes (the tokenizer's sizes:
            the config rule, a joint tokenizer, is :func:`nmt.config_checks.validate`'s).
    """
    if cfg.share_embeddings and src_vocab != tgt_vocab:
        raise ValueError(f"model.share_embeddings needs one joint vocabulary, got {src_vocab} and {tgt_vocab}; "
                         "set data.tokenizer.joint=true or model.share_embeddings=false")
    src = TokenEmbedding(src_vocab, dim, scale)
    return src, src if cfg.share_embeddings else TokenEmbedding(tgt_vocab, dim, scale)


def build_transformer(cfg: ModelConfig, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    """Vaswani et al. 2017 encoder-decoder from ``cfg``.

    Raises:
        ValueError: when embeddings are shared but the vocabularies differ.
    """
    src_embed, tgt_embed = embeddings(cfg, src_vocab, tgt_vocab, cfg.d_model, cfg.scale_embeddings)
    src_pos = PositionalEncoding(cfg.positions, cfg.d_model, cfg.max_positions)
    tgt_pos = PositionalEncoding(cfg.positions, cfg.d_model, cfg.max_positions)
    layer_args = dict(d_model=cfg.d_model, num_heads=cfg.num_heads, ffn_dim=cfg.ffn_dim, dropout=cfg.dropout,
                      attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
                      activation=cfg.activation, pre_norm=cfg.pre_norm)
    encoder = TransformerEncoder(src_embed, src_pos, cfg.encoder_layers, **layer_args)
    decoder = TransformerDecoder(tgt_embed, tgt_pos, cfg.decoder_layers, tie_output=cfg.tie_output,
                                 alignment_layer=cfg.alignment_layer, **layer_args)
    return Seq2Seq(encoder, decoder, cfg.max_positions)


def build_rnn(cfg: ModelConfig, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    """BiRNN encoder + attentional decoder (Bahdanau et al. 2015; Luong et al. 2015) from ``cfg``.

    ``cfg`` is assumed valid (:func:`nmt.config_checks.validate`: an even ``hidden_size``).

    Raises:
        ValueError: shared embeddings without a joint vocabulary, a dot-type score whose query
            and key sizes differ, an unknown RNN type or decoder style.
    """
    src_embed, tgt_embed = embeddings(cfg, src_vocab, tgt_vocab, cfg.embed_dim, scale=False)
    enc_hidden = cfg.hidden_size // 2
    ac = cfg.attention
    attention = RNNAttention(cfg.hidden_size, 2 * enc_hidden, score=ac.score, window=ac.window,
                             window_size=ac.window_size, attention_dim=ac.attention_dim,
                             cosine_scale=ac.cosine_scale, learn_cosine_scale=ac.learn_cosine_scale,
                             max_src_len=ac.max_src_len)
    encoder = RNNEncoder(src_embed, cfg.rnn_type, enc_hidden, cfg.encoder_layers, cfg.dropout)
    decoder = RNNDecoder(tgt_embed, cfg.rnn_type, cfg.hidden_size, cfg.decoder_layers, cfg.dropout,
                         cfg.decoder.style, cfg.decoder.input_feeding, attention, value_dim=2 * enc_hidden,
                         bridge_dim=enc_hidden, tie_output=cfg.tie_output)
    return Seq2Seq(encoder, decoder, cfg.max_positions)


#: architecture name -> builder(cfg, src_vocab, tgt_vocab)
ARCHITECTURES: dict[str, Callable[[ModelConfig, int, int], Seq2Seq]] = {
    "transformer": build_transformer,
    "rnn": build_rnn,
}


def build_model(cfg: ModelConfig, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    """Build the model named by ``cfg.arch``.

    Raises:
        ValueError: for an unknown architecture.
    """
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"unknown model.arch {cfg.arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[cfg.arch](cfg, src_vocab, tgt_vocab)


def count_parameters(model: Seq2Seq) -> int:
    """Number of distinct trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
