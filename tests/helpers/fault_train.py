"""``nmt-train`` with one fault injected, for tests/test_distributed_faults.py (run by torchrun).

``NMT_FAULT`` chooses the fault; the rank it hits writes the time of the fault into
``$NMT_FAULT_STAMP`` so that the test can time how long the other ranks take to stop:

* ``max_tokens``: rank 1 is started with another ``train.max_tokens`` (a per-node config);
* ``validate``: rank 0's validation raises;
* ``save``: rank 0's checkpoint writer (safetensors) raises, as a full disk does;
* ``oom``: rank 1 runs out of memory in its third update;
* ``storage``: rank 1 sees another run directory (``$NMT_FAULT_RUN_DIR``), as on per-node storage.
"""
import os
import sys
import time


def _stamp() -> None:
    with open(os.environ["NMT_FAULT_STAMP"], "w") as f:
        f.write(str(time.time()))


def main() -> None:
    import torch

    fault, rank = os.environ["NMT_FAULT"], int(os.environ.get("RANK", "0"))
    if fault == "storage" and rank == 1:
        sys.argv.append(f"hydra.run.dir={os.environ['NMT_FAULT_RUN_DIR']}")
        _stamp()
    if fault == "max_tokens" and rank == 1:
        sys.argv.append("train.max_tokens=999")
        _stamp()
    if fault == "validate" and rank == 0:
        from nmt.train.validator import Validator

        def broken(self, progress):
            _stamp()
            raise RuntimeError("injected failure in rank 0's validation")

        Validator.validate = broken
    if fault == "save" and rank == 0:
        import safetensors.torch
        from safetensors import SafetensorError

        def full(*args, **kwargs):
            _stamp()
            raise SafetensorError("No space left on device (os error 28)")

        safetensors.torch.save_model = full
    if fault == "oom" and rank == 1:
        from nmt.train.step import Updater

        real = Updater.train_step

        def oom(self, group, progress):
            if progress.step >= 2:
                _stamp()
                raise torch.OutOfMemoryError("CUDA out of memory (injected on rank 1)")
            return real(self, group, progress)

        Updater.train_step = oom
    from nmt.cli.train import main as train

    train()


if __name__ == "__main__":
    main()
