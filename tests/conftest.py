import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def tcvae(*args: str, cwd: Path, check: bool = False, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (as DVC does), from `cwd`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "tcvae", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"tcvae {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


TINY_DSPRITES = {"kind": "dsprites", "source": "procedural",
                 "step": {"shape": 2, "scale": 5, "orientation": 39, "posX": 31, "posY": 31}}  # 2⁵ = 32 images


@pytest.fixture
def project(tmp_path: Path):
    """A working folder with a tiny params.yaml; returns (folder, write_params)."""
    def write_params(params: dict) -> Path:
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return path

    write_params({"data": {"tiny": TINY_DSPRITES}})
    return tmp_path, write_params
