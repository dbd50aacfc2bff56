"""arca installed from a wheel, used from another folder: the presets ship in
the package, so `arca train --config tiny/arca_r64` and `--preset` need no checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_an_installed_wheel_trains_from_a_shipped_preset_outside_the_checkout(
    tmp_path,
    random_model,
):
    # Built from a copy: setuptools builds in the source tree (build/, *.egg-info).
    src = tmp_path / "src"
    skip = (".venv", ".git", "runs", "build", "*.egg-info", "__pycache__", ".*_cache", "docs")
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*skip))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
    )
    (wheel,) = wheels.glob("arca-*.whl")
    # A clean venv: arca from the wheel; its dependencies from this environment's
    # site-packages (no network), whose .pth files (arca's editable install) are not read.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "--disable-pip-version-check",
            "-q",
            "install",
            "--no-deps",
            str(wheel),
        ],
        check=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(py), *args], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=600
        )

    where = run("-c", "import arca.sweep as s; print(s.__file__); print(s.preset_dir('tiny'))")
    assert where.returncode == 0, where.stderr[-2000:]
    module, preset = where.stdout.split()
    assert module.startswith(site) and preset.startswith(site)  # the wheel's, not the checkout's
    assert len(list(Path(preset).glob("*.yaml"))) == 7
    res = run(
        "-m", "arca.cli", "train", "--config", "tiny/arca_r64",
        "--model_name_or_path", str(random_model), "--max_steps", "1", "--train_size", "16",
        "--heldout_size", "4", "--max_completion_length", "8", "--use_cpu", "true",
        "--save_strategy", "no", "--output_dir", "run",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert (elsewhere / "run" / "adapter" / "adapter_model.safetensors").is_file()
    missing = run("-m", "arca.cli", "train", "--config", "tiny/nope")
    assert missing.returncode == 2 and "shipped preset: paper/arca_r16" in missing.stderr
