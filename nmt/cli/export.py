"""``nmt-export ckpt=DIR out=DIR [format=ctranslate2] [quantization=int8] [force=true]``.

Converts a Transformer checkpoint into a CTranslate2 model directory (weights, vocabularies,
sentencepiece model(s)); translate with ``nmt-translate engine=ctranslate2 model=DIR``.
BiRNN checkpoints are refused (CTranslate2 runs Transformers only). Needs ``nmt[ct2]``.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional

log = logging.getLogger("nmt.export")


def main(argv: Optional[list[str]] = None) -> None:
    """Console script ``nmt-export``."""
    from nmt.cli import setup_logging
    from nmt.config import ExportConfig, parse_cli

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\noptions: " + ", ".join(ExportConfig.__dataclass_fields__))
        return
    setup_logging()
    cfg: ExportConfig = parse_cli(ExportConfig, argv)
    if cfg.format != "ctranslate2":
        raise SystemExit(f"error: unknown format={cfg.format!r}; the supported format is ctranslate2")
    from nmt.export.ctranslate2 import ExportError, export_ctranslate2
    from nmt.train.checkpoint import CheckpointError

    try:
        out = export_ctranslate2(cfg.ckpt, cfg.out, quantization=cfg.quantization, force=cfg.force)
    except (ExportError, CheckpointError) as err:
        raise SystemExit(f"error: {err}") from None
    log.info("wrote the CTranslate2 model (%s) to %s; translate with: nmt-translate engine=ctranslate2 model=%s",
             cfg.quantization or "float32", out, out)


if __name__ == "__main__":
    main()
