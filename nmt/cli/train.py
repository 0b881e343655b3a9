"""``nmt-train``: Hydra entry point. Example: ``nmt-train experiment=multi30k_transformer``."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
log = logging.getLogger("nmt.train")


def run(cfg_node) -> dict:
    """Train with a composed config; outputs go to Hydra's run directory."""
    from hydra.core.hydra_config import HydraConfig

    from nmt.config import to_config
    from nmt.data.corpus import DataError
    from nmt.train.data import prepare_data
    from nmt.train.trainer import Trainer

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg = to_config(cfg_node)
    log.info("run directory: %s", run_dir)
    try:
        data = prepare_data(cfg.data, seed=cfg.train.seed, with_test=cfg.train.eval_test)
    except DataError as err:
        log.error("%s", err)
        sys.exit(2)
    data.tokenizer.save(run_dir / "tokenizer")
    return Trainer(cfg, data, run_dir).train()


def main() -> None:
    """Console script ``nmt-train``."""
    import hydra

    from nmt.config import register_configs

    register_configs()
    hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(run)()


if __name__ == "__main__":
    main()
