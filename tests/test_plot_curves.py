"""scripts/plot_curves.py: dev BLEU and loss against wall-clock minutes from TensorBoard logs."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from test_cli_e2e import ROOT


@pytest.fixture(scope="module")
def curves_module():
    spec = importlib.util.spec_from_file_location("plot_curves", ROOT / "scripts" / "plot_curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(path, bleus):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(path / "tensorboard"))
    for i, bleu in enumerate(bleus, 1):
        writer.add_scalar("train/loss", 5.0 / i, i * 10, walltime=1000.0 + 60 * i)
        writer.add_scalar("valid/loss", 5.5 / i, i * 10, walltime=1000.0 + 60 * i)
        writer.add_scalar("valid/bleu", bleu, i * 10, walltime=1000.0 + 60 * i)
    writer.close()


def test_curves_are_read_in_minutes_and_plotted(tmp_path, curves_module):
    _fake_run(tmp_path / "a", [10.0, 20.0, 25.0])
    _fake_run(tmp_path / "b", [5.0, 30.0])
    curves = curves_module.read_curves(tmp_path / "a")
    assert [(t, s, v) for t, s, v in curves["valid/bleu"]] == [(0.0, 10, 10.0), (1.0, 20, 20.0), (2.0, 30, 25.0)]
    out = tmp_path / "fig" / "curves.png"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_curves.py"), str(tmp_path / "a"),
                           str(tmp_path / "b"), "--labels", "A,B", "--out", str(out)],
                          capture_output=True, text=True, check=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "A: best dev BLEU 25.00 at step 30 (2.0 min)" in proc.stdout
    assert "B: best dev BLEU 30.00 at step 20 (1.0 min)" in proc.stdout


def test_a_directory_without_events_is_named(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_curves.py"), str(tmp_path), "--out",
                           str(tmp_path / "x.png")], capture_output=True, text=True)
    assert proc.returncode == 2 and str(tmp_path) in proc.stderr and "no TensorBoard event file" in proc.stderr
