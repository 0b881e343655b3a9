"""Convert a Transformer checkpoint to a CTranslate2 model directory, and translate with it.

CTranslate2 (https://opennmt.net/CTranslate2) is a C++ inference engine for Transformer
models. The converter fills ``ctranslate2.specs.TransformerSpec`` with our weights the way its
own Fairseq converter does (``docs/guides/... "Write a new converter"``):

* embeddings scaled by sqrt(d_model), sinusoidal or learned positions copied as a table
  (row p = position p, both sides start at 0);
* self-attention: our ``q_proj`` and fused ``kv_proj`` stacked into CTranslate2's one fused
  QKV matrix; cross-attention: ``q_proj`` then the fused ``kv_proj``;
* post-norm (``pre_norm=false``) or pre-norm with final layer norms, LayerNorm eps 1e-5;
* output projection = the tied embedding matrix or its own; vocabulary = the sentencepiece
  pieces in id order (``<pad>``, ``<unk>``, ``<s>``, ``</s>`` are ids 0-3, as CTranslate2
  expects), the source followed by ``</s>``, decoding started with ``<s>``.

The sentencepiece model(s) are copied next to ``model.bin`` so the directory is
self-contained; ``nmt.json`` records where it came from. ``ctranslate2`` is an optional
dependency (``pip install 'nmt[ct2]'``).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Optional, Sequence

import torch

from nmt.checkpoint import CheckpointError, LoadedModel, load_model, read_json, read_tokenizer
from nmt.evaluate import truncate_sources
from nmt.io import fsync_dir
from nmt.models.transformer import GATED_ACTIVATIONS

QUANTIZATIONS = ("float32", "int8", "int8_float32", "int16", "float16", "bfloat16", "int8_float16",
                 "int8_bfloat16")
META_FILE = "nmt.json"


class ExportError(RuntimeError):
    """The checkpoint cannot be converted (unsupported architecture, missing package, ...)."""


def _import_ctranslate2():
    try:
        import ctranslate2
    except ImportError as err:
        raise ExportError("the CTranslate2 engine needs the ctranslate2 package: pip install 'nmt[ct2]' "
                          "(or pip install ctranslate2)") from err
    return ctranslate2


def build_spec(loaded: LoadedModel):
    """A filled ``ctranslate2.specs.TransformerSpec`` for a loaded Transformer checkpoint.

    Args:
        loaded: :class:`nmt.checkpoint.LoadedModel`.
    Raises:
        ExportError: for a BiRNN model (CTranslate2 runs Transformers only) or options it
            cannot express (GELU and the gated SwiGLU/GEGLU FFNs are supported; learned and sinusoidal
            positions both are).
    """
    _import_ctranslate2()
    from ctranslate2.specs import common_spec, transformer_spec

    cfg = loaded.config.model
    if cfg.arch != "transformer":
        raise ExportError(f"a {cfg.arch} model is not supported by CTranslate2, which runs Transformer models only; "
                          "translate it with nmt-translate (engine=torch)")
    model = loaded.model.eval()
    enc, dec = model.encoder, model.decoder
    activation = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU,
                  "swiglu": common_spec.Activation.SWISH, "geglu": common_spec.Activation.GELU}[cfg.activation]
    gated = cfg.activation in GATED_ACTIVATIONS  # CTranslate2's ffn_glu: act(linear_0 x) * linear_0_noact x
    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.encoder_layers, cfg.decoder_layers), cfg.num_heads, pre_norm=cfg.pre_norm, activation=activation,
        ffn_glu=gated,
        alignment_layer=dec.alignment_layer, alignment_heads=0)  # 0: average of all heads, as nmt-translate
    _inputs(spec.encoder, enc)
    for ls, layer in zip(spec.encoder.layer, enc.layers):
        _attention(ls.self_attention, layer.self_attn, True)
        _norm(ls.self_attention.layer_norm, layer.attn_block.norm)
        _ffn(ls, layer, gated)
    if enc.final_norm is not None:
        _norm(spec.encoder.layer_norm, enc.final_norm)
    _inputs(spec.decoder, dec)
    for ls, layer in zip(spec.decoder.layer, dec.layers):
        _attention(ls.self_attention, layer.self_attn, True)
        _norm(ls.self_attention.layer_norm, layer.self_block.norm)
        _attention(ls.attention, layer.cross_attn, False)
        _norm(ls.attention.layer_norm, layer.cross_block.norm)
        _ffn(ls, layer, gated)
    if dec.final_norm is not None:
        _norm(spec.decoder.layer_norm, dec.final_norm)
    _linear(spec.decoder.projection, *dec.output_projection())
    tok = loaded.tokenizer
    spec.register_source_vocabulary(tok.src_pieces(range(tok.src_vocab_size)))
    spec.register_target_vocabulary(tok.tgt_pieces(range(tok.tgt_vocab_size)))
    spec.config.add_source_eos = True  # the encoder sees "pieces </s>", as in training
    spec.config.decoder_start_token = "<s>"
    spec.config.layer_norm_epsilon = 1e-5  # torch.nn.LayerNorm's default
    return spec


def _array(t: torch.Tensor):
    return t.detach().float().cpu().numpy()


def _linear(ls, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> None:
    ls.weight = _array(weight)
    if bias is not None:
        ls.bias = _array(bias)


def _norm(ns, module: torch.nn.LayerNorm) -> None:
    ns.gamma, ns.beta = _array(module.weight), _array(module.bias)


def _attention(sa, mha, self_attention: bool) -> None:
    """Our ``q_proj`` and fused ``kv_proj`` -> CTranslate2's fused QKV (self-attention) or Q, KV (cross)."""
    if self_attention:
        _linear(sa.linear[0], torch.cat([mha.q_proj.weight, mha.kv_proj.weight]),
                torch.cat([mha.q_proj.bias, mha.kv_proj.bias]))
        _linear(sa.linear[1], mha.out_proj.weight, mha.out_proj.bias)
    else:
        _linear(sa.linear[0], mha.q_proj.weight, mha.q_proj.bias)
        _linear(sa.linear[1], mha.kv_proj.weight, mha.kv_proj.bias)
        _linear(sa.linear[2], mha.out_proj.weight, mha.out_proj.bias)


def _inputs(side_spec, side) -> None:
    """Token embedding, its sqrt(d_model) scale and the position table of one side."""
    emb = side_spec.embeddings[0] if isinstance(side_spec.embeddings, list) else side_spec.embeddings
    emb.weight = _array(side.embed.weight)
    side_spec.scale_embeddings = side.embed.scale != 1.0
    side_spec.position_encodings.encodings = _array(side.positions.table)


def _ffn(ls, layer, gated: bool) -> None:
    """fc1/fc2 and the FFN's norm; a gated fc1 holds [gate; value] rows (nmt.models.transformer.FeedForward)."""
    if gated:
        (w_gate, w_value), (b_gate, b_value) = layer.ffn.fc1.weight.chunk(2), layer.ffn.fc1.bias.chunk(2)
        _linear(ls.ffn.linear_0, w_gate, b_gate)
        _linear(ls.ffn.linear_0_noact, w_value, b_value)
    else:
        _linear(ls.ffn.linear_0, layer.ffn.fc1.weight, layer.ffn.fc1.bias)
    _linear(ls.ffn.linear_1, layer.ffn.fc2.weight, layer.ffn.fc2.bias)
    _norm(ls.ffn.layer_norm, layer.ffn_block.norm)


def is_export(path: Path) -> bool:
    """True when ``path`` is a model directory written by :func:`export_ctranslate2`."""
    return path.is_dir() and not path.is_symlink() and (path / "model.bin").is_file() and (path / META_FILE).is_file()


def export_ctranslate2(ckpt: str, out: str | Path, quantization: Optional[str] = None, force: bool = False) -> Path:
    """Convert checkpoint ``ckpt`` (a checkpoint or run directory) into the CTranslate2 model
    directory ``out`` (``model.bin``, vocabularies, sentencepiece model(s), ``nmt.json``).

    The directory is written under a temporary name beside ``out`` and renamed into place, so
    ``out`` is the old export or the whole new one, never a mixture (R1); only an empty folder
    or an earlier export is ever replaced (R31).

    Args:
        quantization: weight type stored in the model (``int8``, ``int16``, ``float16``, ...);
            None keeps float32.
        force: replace an existing export at ``out``.
    Raises:
        ExportError: unsupported model, unknown quantization, ``out`` is an export and no
            ``force``, ``out`` is something else that is not empty, or ctranslate2 missing.
        nmt.checkpoint.CheckpointError: unreadable checkpoint.
    """
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quantization!r}; expected one of {', '.join(QUANTIZATIONS)}")
    out = Path(out)
    occupied = out.is_symlink() or out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and not is_export(out):
        raise ExportError(f"{out} exists and is not a model exported by nmt-export; choose another out= "
                          "(nmt-export replaces only an earlier export)")
    if occupied and not force:
        raise ExportError(f"{out} holds an earlier export; choose another out= or pass force=true to replace it")
    loaded = load_model(ckpt)
    spec = build_spec(loaded)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        spec.validate()
        spec.optimize(quantization=quantization)
        spec.save(str(tmp))
        _write_beside(tmp, loaded, quantization)
        old = _swap_in(tmp, out, occupied)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def _write_beside(folder: Path, loaded: LoadedModel, quantization: Optional[str]) -> None:
    """The sentencepiece model(s) and ``nmt.json`` next to ``model.bin``, every file synced."""
    for name, data in loaded.tokenizer.to_bytes().items():
        (folder / name).write_bytes(data)
    search = loaded.config.search
    meta = {"source_checkpoint": str(loaded.path), "quantization": quantization or "float32",
            "src_lang": loaded.config.data.src_lang, "tgt_lang": loaded.config.data.tgt_lang,
            "search": {"beam_size": search.beam_size, "length_penalty": search.length_penalty,
                       "max_len_a": search.max_len_a, "max_len_b": search.max_len_b},
            "max_src_len": loaded.config.model.max_positions - 1, "tokenizer_sha256": loaded.tokenizer.sha256()}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    for f in folder.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())


def _swap_in(tmp: Path, out: Path, occupied: bool) -> Optional[Path]:
    """Rename ``tmp`` to ``out``; an earlier export there is moved aside first and returned for deletion."""
    old = None
    if out.is_dir() and occupied:
        old = out.parent / f".tmp-old-{out.name}.{os.getpid()}.{secrets.token_hex(4)}"
        os.replace(out, old)
    elif out.is_dir():
        out.rmdir()
    os.replace(tmp, out)
    fsync_dir(out.parent)
    return old


class CT2Translator:
    """Translate raw sentences with an exported CTranslate2 model directory.

    Args:
        model_dir: what :func:`export_ctranslate2` wrote.
        device: ``cpu`` or ``cuda``; compute_type: CTranslate2's (``default`` keeps the stored type).
        intra_threads: threads per translation (0: CTranslate2's default).
    Raises:
        ExportError: not a model directory written by nmt-export, or ctranslate2 missing.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", compute_type: str = "default",
                 intra_threads: int = 0) -> None:
        ct2 = _import_ctranslate2()

        self.dir = Path(model_dir)
        if not is_export(self.dir):
            raise ExportError(f"{self.dir} is not a CTranslate2 model written by nmt-export "
                              f"(needs model.bin and {META_FILE})")
        try:  # an exported model may come from anyone: small files, a tokenizer that matches (R12, R30)
            self.meta = read_json(self.dir / META_FILE)
            self.tokenizer = read_tokenizer(self.dir, self.meta if "tokenizer_sha256" in self.meta else None)
            search, limit = self.meta["search"], self.meta["max_src_len"]
            if not (isinstance(limit, int) and 1 <= limit < 16384 and isinstance(search, dict)
                    and isinstance(search.get("beam_size"), int) and 1 <= search["beam_size"] <= 1000
                    and isinstance(search.get("length_penalty"), (int, float))):
                raise CheckpointError(f"{self.dir / META_FILE}: search or max_src_len out of range")
        except (CheckpointError, KeyError, TypeError) as err:
            raise ExportError(f"{self.dir}: {err}") from None
        self.translator = ct2.Translator(str(self.dir), device=device, compute_type=compute_type,
                                         intra_threads=intra_threads)
        tok = self.tokenizer
        self._tgt_ids = {piece: i for i, piece in enumerate(tok.tgt_pieces(range(tok.tgt_vocab_size)))}

    def translate(self, sentences: Sequence[str], beam_size: Optional[int] = None,
                  length_penalty: Optional[float] = None, nbest: int = 1, batch_size: int = 64,
                  max_decoding_length: int = 256) -> list[list[tuple[str, float]]]:
        """Sentences -> per sentence, ``nbest`` (text, score) pairs (an empty line gives ``("", 0.0)``).

        ``length_penalty`` is CTranslate2's (score / length^alpha), not Wu et al.'s, so the same
        number ranks hypotheses slightly differently from nmt-translate.
        """
        search = self.meta["search"]
        beam = beam_size or search["beam_size"]
        alpha = search["length_penalty"] if length_penalty is None else length_penalty
        ids = self.tokenizer.encode_src(sentences)
        limit = self.meta["max_src_len"]
        tokens = [self.tokenizer.src_pieces(s) for s in truncate_sources(ids, limit)]
        rows = [i for i, t in enumerate(tokens) if t]
        out: list[list[tuple[str, float]]] = [[("", 0.0)] for _ in sentences]
        if not rows:
            return out
        results = self.translator.translate_batch(
            [tokens[i] for i in rows], beam_size=max(beam, nbest), num_hypotheses=nbest, length_penalty=alpha,
            max_batch_size=batch_size, batch_type="examples",
            max_decoding_length=min(max_decoding_length, limit),  # the positions the model has (R25)
            return_scores=True)
        for i, res in zip(rows, results):
            texts = self.tokenizer.decode_tgt([[self._tgt_ids[p] for p in hyp] for hyp in res.hypotheses])
            out[i] = list(zip(texts, [float(s) for s in res.scores]))
        return out

    def translate_ids(self, src_ids: Sequence[Sequence[int]], beam_size: int = 1, max_decoding_length: int = 256,
                      batch_size: int = 64, length_penalty: float = 1.0) -> list[list[int]]:
        """Source id lists -> best target id lists (no BOS/EOS), for comparisons with our search."""
        tokens = [self.tokenizer.src_pieces(s) for s in src_ids]
        results = self.translator.translate_batch(tokens, beam_size=beam_size, max_batch_size=batch_size,
                                                  batch_type="examples", max_decoding_length=max_decoding_length,
                                                  length_penalty=length_penalty)
        return [[self._tgt_ids[p] for p in r.hypotheses[0]] for r in results]
