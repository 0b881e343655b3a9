"""``nmt-export ckpt=DIR out=DIR [format=ctranslate2] [quantization=int8] [force=true]``.

Converts a Transformer checkpoint into a CTranslate2 model directory (weights, vocabularies,
sentencepiece model(s)); translate with ``nmt-translate engine=ctranslate2 model=DIR``.
BiRNN checkpoints are refused (CTranslate2 runs Transformers only). Needs ``nmt[ct2]``.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional

from nmt.cli import one_error_line

log = logging.getLogger("nmt.export")


@one_error_line
def main(argv: Optional[list[str]] = None) -> None:
    """Console script ``nmt-export``."""
    from nmt.cli import parse_options
    from nmt.cli.options import ExportConfig

    cfg: Optional[ExportConfig] = parse_options(ExportConfig, __doc__, sys.argv[1:] if argv is None else argv)
    if cfg is None:
        return
    if cfg.format != "ctranslate2":
        raise SystemExit(f"error: unknown format={cfg.format!r}; the supported format is ctranslate2")
    from nmt.export.ctranslate2 import ExportError, export_ctranslate2
    from nmt.checkpoint import CheckpointError

    try:
        out = export_ctranslate2(cfg.ckpt, cfg.out, quantization=cfg.quantization, force=cfg.force)
    except (ExportError, CheckpointError) as err:
        raise SystemExit(f"error: {err}") from None
    log.info("wrote the CTranslate2 model (%s) to %s; translate with: nmt-translate engine=ctranslate2 model=%s",
             cfg.quantization or "float32", out, out)


if __name__ == "__main__":
    main()
