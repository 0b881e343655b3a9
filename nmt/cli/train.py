"""``nmt-train``: Hydra entry point. Example: ``nmt-train experiment=multi30k_transformer``.

Data-parallel: ``torchrun --nproc_per_node N --no-python nmt-train ...`` (docs/distributed.md);
every process uses the same Hydra run directory, and only rank 0
writes into it (Hydra's ``.hydra/`` and log file included).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("nmt.train")

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by a signal after saving; re-run the same command to resume
EXIT_DIVERGED = 4  # train.max_bad_steps non-finite updates in a row


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

    Exit codes: 0 done; 1 another process of a distributed job failed; 2 bad input, an unusable
    run directory or checkpoint (the message says which file and what), processes of a
    distributed job that disagree, or a token budget whose largest batch does not fit in memory;
    4 training diverged (``train.max_bad_steps`` non-finite updates in a row); 75 stopped by
    SIGTERM/SIGINT after saving (run the same command again to resume).
    """
    from hydra.core.hydra_config import HydraConfig

    from nmt.config import ConfigError, to_config
    from nmt.config_checks import validate
    from nmt.data.errors import DataError
    from nmt.checkpoint import CheckpointError
    from nmt.train import distributed
    from nmt.train.trainer import BatchTooLarge, RunDirError, Trainer, TrainingDiverged, TrainingInterrupted

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg = to_config(cfg_node)
    try:
        validate(cfg)
    except ConfigError as err:
        log.error("%s", err)
        sys.exit(2)
    dist = distributed.init_distributed(cfg.train.device, timeout_minutes=cfg.train.dist_timeout_minutes)
    try:
        distributed.per_rank_update_freq(cfg.train.update_freq, dist)
    except ValueError as err:
        log.error("%s", err)
        sys.exit(2)
    log.info("run directory: %s", run_dir)
    data = _prepare_data(cfg, dist)
    try:
        trainer = Trainer(cfg, data, run_dir, dist)
        if dist.is_main:
            data.tokenizer.save(run_dir / "tokenizer")
        results = trainer.train()
        distributed.shutdown(dist)
        return results
    except (RunDirError, CheckpointError, BatchTooLarge, DataError) as err:
        log.error("%s", err)
        sys.exit(2)
    except TrainingInterrupted as err:
        log.warning("%s", err)
        sys.exit(EXIT_INTERRUPTED)
    except TrainingDiverged as err:
        log.error("%s", err)
        sys.exit(EXIT_DIVERGED)
    except distributed.PeerFailed as err:
        log.error("%s", err)
        sys.exit(1)


def _prepare_data(cfg, dist):
    """The corpora, tokenizer and batches of this process; rank 0 trains the tokenizer (and fills
    the caches) while the others wait, then they read what it wrote. Exits 2 on a data error."""
    from nmt.data.errors import DataError
    from nmt.train import distributed
    from nmt.train.data import prepare_data

    data, error = None, None
    for turn in ("main", "others"):
        if (turn == "main") == dist.is_main:
            try:
                data = prepare_data(cfg.data, seed=cfg.train.seed, with_test=cfg.train.eval_test,
                                    max_tokens=cfg.train.max_tokens)
            except DataError as err:
                error = str(err)
        if turn == "main":
            error = distributed.broadcast_object(dist, error)
        if error is not None:
            log.error("%s", error)
            sys.exit(2)
    return data


def main() -> None:
    """Console script ``nmt-train``."""
    import hydra

    from nmt.config import register_configs
    from nmt.train.distributed import env_rank

    if any(a in ("-h", "--help") for a in sys.argv[1:]):  # our options table; Hydra's own: --hydra-help
        from nmt.cli.reference import train_help_doc
        from nmt.config import Config
        from nmt.field_docs import help_text

        print(help_text(Config, train_help_doc(conf_dir())))
        return
    if "--version" in sys.argv[1:]:
        from nmt.versions import format_versions

        print(format_versions())
        return
    rank = env_rank()
    if rank > 0:
        # torchrun: one run directory for the job; only rank 0 writes .hydra/ and the log file there
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
        logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: "
                            "%(message)s", stream=sys.stderr, force=True)
    register_configs()
    hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")(run)()


if __name__ == "__main__":
    main()
