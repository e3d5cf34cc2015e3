"""The laptop default's calibration study: which short CPU setting, if any, lets β-TCVAE capture more factors than
β-VAE at the same β?

For each setting below, every (method, seed) run is trained and evaluated by the pipeline's own stage commands
(`tcvae stage …`, in a scratch folder per setting, nothing shared with the workspace), and one row per run is
appended to the CSV: MIG, discrete MIG, factors captured (tcvae.metrics.factors_captured on the run's MIG mutual
information), active units, TC, and the run's wall and CPU seconds (train and evaluate). Rows already in the CSV are
kept, so the study resumes where it stopped.

    python scripts/calibrate_default.py run [SETTING …]    # train and evaluate (all settings by default)
    python scripts/calibrate_default.py table              # the markdown table of docs/calibration.md

A setting "fits the default" when its whole sweep (the settings' runs for one seed, plus data and plots) would take
under 20 minutes on a quiet 2-core machine; the CPU seconds are the measure (2 threads: wall ≈ CPU / 2 when quiet),
since the study itself ran beside other work.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "docs" / "calibration.csv"
SCRATCH = Path(os.environ.get("TCVAE_CALIBRATION_DIR", "/tmp/tcvae-calibration"))
SEEDS = (0, 1, 2)
GRID = {"kind": "dsprites", "source": "procedural", "step": {"orientation": 4, "posX": 2, "posY": 2}}   # 46,080
SIMPLE = {"kind": "dsprites", "source": "procedural", "keep": {"shape": [2], "orientation": [0]}}        # 6,144 hearts

# name: (data set, train params over the default's, β). The default today is `default-600`.
SETTINGS = {
    "default-600": (GRID, {"steps": 600, "batch_size": 256}, 6),
    "b1024-300": (GRID, {"steps": 300, "batch_size": 1024}, 4),
    "b1024-600": (GRID, {"steps": 600, "batch_size": 1024}, 4),
    "hearts-b512-1200": (SIMPLE, {"steps": 1200, "batch_size": 512}, 4),
    "b1024-300-beta2": (GRID, {"steps": 300, "batch_size": 1024}, 2),
}
TRAIN = {"lr": 0.001, "latents": 10, "mlp_width": 512, "arch": {"dsprites": "mlp"}, "estimator": "mss",
         "log_every": 50}
EVALUATE = {"n_samples": 5000, "batch_size": 2048}
FIELDS = ["setting", "images", "steps", "batch_size", "beta", "method", "seed", "mig", "mig_discrete", "captured",
          "captured_factors", "active_units", "tc", "elbo", "train_s", "train_cpu_s", "evaluate_s", "evaluate_cpu_s"]


def params(name: str) -> dict:
    data, train, beta = SETTINGS[name]
    return {"data": {"d": data}, "train": {**TRAIN, **train},
            "sweep": {"datasets": ["d"], "betas": {"betavae": [beta], "tcvae": [beta], "factorvae": [], "annealedvae": []},
                      "seeds": list(SEEDS)},
            "evaluate": EVALUATE, "figures": {}, "plot": {}, "compute": {"device": "cpu"}}


def stage(folder: Path, *args: str) -> tuple[float, float]:
    """Run `tcvae stage …` in `folder`; return its wall and CPU seconds (user + system of the child)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    subprocess.run([sys.executable, "-m", "tcvae", "stage", *args], cwd=folder, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.monotonic() - start, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def done_rows() -> set[tuple[str, str, str]]:
    if not CSV.is_file():
        return set()
    with open(CSV, newline="") as f:
        return {(r["setting"], r["method"], r["seed"]) for r in csv.DictReader(f)}


def run(names: list[str]) -> None:
    from tcvae.metrics import factors_captured

    CSV.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        folder = SCRATCH / name
        folder.mkdir(parents=True, exist_ok=True)
        p = params(name)
        (folder / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        if not (folder / "data/processed/d.h5").is_file():
            stage(folder, "download")
            stage(folder, "preprocess")
        beta = SETTINGS[name][2]
        for seed in SEEDS:
            for method in ("betavae", "tcvae"):
                if (name, method, str(seed)) in done_rows():
                    continue
                coords = ["--dataset", "d", "--method", method, "--beta", str(beta), "--seed", str(seed)]
                train = stage(folder, "train", *coords)
                evaluate = stage(folder, "evaluate", *coords)
                ev = json.loads((folder / f"data/runs/d/{method}/beta{beta}/seed{seed}/eval.json").read_text())
                own = factors_captured(ev["mig"]["mutual_info"], ev["mig"]["factor_entropy"])
                captured = [f for f, j in zip(ev["metric_factors"], own) if j is not None]
                row = {"setting": name, "images": ev["n_images"], "steps": p["train"]["steps"],
                       "batch_size": p["train"]["batch_size"], "beta": beta, "method": method, "seed": seed,
                       "mig": round(ev["mig"]["score"], 4), "mig_discrete": round(ev["mig_discrete"]["score"], 4),
                       "captured": len(captured), "captured_factors": " ".join(captured),
                       "active_units": ev["active_units"],
                       "tc": round(ev["decomposition"]["total_correlation"], 4), "elbo": round(ev["elbo"], 2),
                       "train_s": round(train[0], 1), "train_cpu_s": round(train[1], 1),
                       "evaluate_s": round(evaluate[0], 1), "evaluate_cpu_s": round(evaluate[1], 1)}
                new = not CSV.is_file()
                with open(CSV, "a", newline="") as f:
                    w = csv.DictWriter(f, FIELDS, lineterminator="\n")
                    if new:
                        w.writeheader()
                    w.writerow(row)
                print(f"{name} {method} seed {seed}: MIG {row['mig']:.3f}, captured {row['captured_factors'] or '—'} "
                      f"({row['train_cpu_s']:.0f} + {row['evaluate_cpu_s']:.0f} CPU s)", flush=True)


def table() -> None:
    """Per setting: MIG and factors captured per seed for both methods, and the seeds in which β-TCVAE captures more."""
    with open(CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    print("| setting | images | steps × batch | β | β-VAE MIG (seeds 0, 1, 2) | β-TCVAE MIG | β-VAE captured | "
          "β-TCVAE captured | β-TCVAE ahead | CPU s per run (train + evaluate) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["setting"] for r in rows):
        mine = {(r["method"], r["seed"]): r for r in rows if r["setting"] == name}
        seeds = sorted({int(s) for _, s in mine}, key=int)
        get = lambda m, k: [mine[m, str(s)][k] for s in seeds if (m, str(s)) in mine]
        ahead = sum(int(mine["tcvae", str(s)]["captured"]) > int(mine["betavae", str(s)]["captured"])
                    for s in seeds if ("tcvae", str(s)) in mine and ("betavae", str(s)) in mine)
        cpu = [float(r["train_cpu_s"]) + float(r["evaluate_cpu_s"]) for r in mine.values()]
        any_row = next(iter(mine.values()))
        fmt = lambda v: ", ".join(f"{float(x):.3f}" for x in v)
        names = lambda v: "; ".join(x or "—" for x in v)
        print(f"| {name} | {int(any_row['images']):,} | {any_row['steps']} × {any_row['batch_size']} | {any_row['beta']} "
              f"| {fmt(get('betavae', 'mig'))} | {fmt(get('tcvae', 'mig'))} | {names(get('betavae', 'captured_factors'))} "
              f"| {names(get('tcvae', 'captured_factors'))} | {ahead} of {len(seeds)} | "
              f"{min(cpu):.0f}–{max(cpu):.0f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["table"]:
        table()
    elif sys.argv[1:2] == ["run"]:
        run(sys.argv[2:] or list(SETTINGS))
    else:
        sys.exit(__doc__)
