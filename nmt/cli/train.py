"""``nmt-train``: Hydra entry point. Example: ``nmt-train experiment=multi30k_transformer``."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("nmt.train")


def conf_dir() -> str:
    """The Hydra config directory: the checkout's ``conf/`` (editable installs and a source
    tree), else the copy installed with the package as ``nmt/conf`` (a wheel).

    Raises:
        FileNotFoundError: neither exists (a broken installation).
    """
    checkout = Path(__file__).resolve().parents[2] / "conf"
    if (checkout / "config.yaml").is_file():
        return str(checkout)
    installed = Path(__file__).resolve().parents[1] / "conf"
    if (installed / "config.yaml").is_file():
        return str(installed)
    raise FileNotFoundError(f"no Hydra configs: neither {checkout} nor {installed} has config.yaml; "
                            "reinstall the package (pip install .) or run from a checkout")


def run(cfg_node) -> dict:
    """Train with a composed config; outputs go to Hydra's run directory.

    Exit codes: 0 done; 2 bad input, an unusable run directory or checkpoint (the message says
    which file and what), or a token budget whose largest batch does not fit in memory; 4 training diverged (``train.max_bad_steps`` non-finite updates in a
    row); 75 stopped by SIGTERM/SIGINT after saving (run the same command again to resume).
    """
    from hydra.core.hydra_config import HydraConfig

    from nmt.config import ConfigError, to_config, validate
    from nmt.data.corpus import DataError
    from nmt.train.checkpoint import CheckpointError
    from nmt.train.data import prepare_data
    from nmt.train.trainer import (EXIT_DIVERGED, EXIT_INTERRUPTED, BatchTooLarge, RunDirError, Trainer,
                                   TrainingDiverged, TrainingInterrupted)

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg = to_config(cfg_node)
    try:
        validate(cfg)
    except ConfigError as err:
        log.error("%s", err)
        sys.exit(2)
    log.info("run directory: %s", run_dir)
    try:
        data = prepare_data(cfg.data, seed=cfg.train.seed, with_test=cfg.train.eval_test)
    except DataError as err:
        log.error("%s", err)
        sys.exit(2)
    try:
        trainer = Trainer(cfg, data, run_dir)
        data.tokenizer.save(run_dir / "tokenizer")
        return trainer.train()
    except (RunDirError, CheckpointError, BatchTooLarge) as err:
        log.error("%s", err)
        sys.exit(2)
    except TrainingInterrupted as err:
        log.warning("%s", err)
        sys.exit(EXIT_INTERRUPTED)
    except TrainingDiverged as err:
        log.error("%s", err)
        sys.exit(EXIT_DIVERGED)


def main() -> None:
    """Console script ``nmt-train``."""
    import hydra

    from nmt.config import register_configs

    register_configs()
    hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")(run)()


if __name__ == "__main__":
    main()
