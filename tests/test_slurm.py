"""`tcvae sweep submit` / `status` against a real one-node SLURM (slurmctld, slurmd, munge from Debian's packages)
started on 127.0.0.1 for this module, with a local-folder DVC remote and a shared checkpoint folder."""

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_EVAL, python_path, tiny_params
from tests.test_scale import DVC, make_repo, run

INSTALL = "sudo apt-get install -y slurmctld slurmd slurm-client munge"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
RUNS = tiny_params(train={**tiny_params()["train"], "steps": 60},
                   sweep={"datasets": ["tiny"], "betas": {"betavae": [1, 4], "tcvae": [4, 8], "factorvae": [], "annealedvae": []}, "seeds": [0]},
                   evaluate={**TINY_EVAL, "scores": []})      # 4 runs; MIG only


def _missing() -> str | None:
    gone = [d for d in DAEMONS if not shutil.which(d) and not Path("/usr/sbin", d).exists()]
    if gone:
        return f"SLURM is not installed ({', '.join(gone)} missing): {INSTALL}"
    if os.geteuid() != 0:
        return "the one-node SLURM test starts slurmd, which runs jobs as root: run the tests as root (as .ci/run does)"
    return None


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """SLURM_CONF of a running one-node cluster (4 CPU slots, partition `debug`), stopped afterwards."""
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "munge"):
        (d / sub).mkdir()
    (d / "munge").chmod(0o700)
    key = d / "munge/key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    sock = d / "munge/sock"
    sbin = lambda name: shutil.which(name) or f"/usr/sbin/{name}"
    subprocess.run([sbin("munged"), "--force", f"--key-file={key}", f"--socket={sock}", f"--pid-file={d}/munge/pid",
                    f"--log-file={d}/munge/log", f"--seed-file={d}/munge/seed"], check=True)
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=tcvae-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_port()}
SlurmdPort={_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=20
SchedulerParameters=sched_interval=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=5 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run([sbin("slurmctld"), "-i"], env=env, check=True)
    subprocess.run([sbin("slurmd"), "-N", "localhost"], env=env, check=True)
    deadline = time.monotonic() + 60
    while "idle" not in subprocess.run(["sinfo", "--noheader", "--format=%T"], env=env, capture_output=True,
                                       text=True).stdout:
        assert time.monotonic() < deadline, (d / "slurmctld.log").read_text()[-2000:]
        time.sleep(0.5)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    yield conf
    for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/pid"):
        try:
            os.kill(int((d / pid_file).read_text()), 15)
        except (OSError, ValueError):
            pass
    if old is None:
        os.environ.pop("SLURM_CONF")
    else:
        os.environ["SLURM_CONF"] = old


def sweep(*args, cwd, path=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path or f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": python_path(), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "tcvae", "sweep", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def wait_for(condition, what: str, timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def queue_empty() -> bool:
    return not subprocess.run(["squeue", "--noheader"], capture_output=True, text=True).stdout.strip()


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def test_submit_cancel_resubmit_and_rebuild_without_training(cluster, tmp_path):
    origin = make_repo(tmp_path / "origin", RUNS | {"compute": {"checkpoint_dir": str(tmp_path / "ckpt"),
                                                                "checkpoint_every_steps": 5}})
    (tmp_path / "remote").mkdir()
    run(*DVC, "remote", "add", "-d", "shared", tmp_path / "remote", cwd=origin)
    run(*DVC, "remote", "add", "gone", "/nonexistent/remote", cwd=origin)
    run("git", "add", "-A", cwd=origin), run("git", "commit", "-qm", "pipeline", cwd=origin)

    # bad input: one line, exit 2, nothing submitted
    bad = {"--partition=nope": "not a partition", "--remote=gone": "cannot be reached", "--remote=nowhere": "nowhere"}
    for option, says in bad.items():
        proc = sweep("submit", option, cwd=origin)
        assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = sweep("submit", cwd=origin, path=str(Path(sys.executable).parent))    # no SLURM tools on PATH
    assert proc.returncode == 2 and "`sbatch` not found" in proc.stderr
    (origin / "params.yaml").write_text((origin / "params.yaml").read_text() + "\n# edited\n")
    proc = sweep("submit", cwd=origin)
    assert proc.returncode == 2 and "uncommitted changes (params.yaml)" in proc.stderr
    run("git", "checkout", "params.yaml", cwd=origin)
    assert queue_empty()

    dry = sweep("submit", "--dry-run", "--partition=debug", "--time=10:00", "--sbatch-line=--comment=tcvae", cwd=origin)
    assert dry.returncode == 0, dry.stderr
    assert "#SBATCH --array=0-3" in dry.stdout and "#SBATCH --partition=debug" in dry.stdout
    assert "#SBATCH --comment=tcvae" in dry.stdout and "evaluate-tcvae@tiny-8-0" in dry.stdout and queue_empty()

    given = ["--partition=debug", "--time=10:00", "--cpus=1", "--sbatch-line=--comment=tcvae"]
    proc = sweep("submit", *given, cwd=origin)
    assert proc.returncode == 0 and "submitted 4 runs as array job" in proc.stdout, proc.stderr
    array = proc.stdout.split("array job ")[1].split()[0]
    # cancel the first task mid-training: SIGTERM, its checkpoint stays in the shared folder
    ckpts = lambda: list((tmp_path / "ckpt").glob("tiny-betavae-beta1-seed0-*.pt"))
    wait_for(ckpts, "the first task's checkpoint")
    subprocess.run(["scancel", f"{array}_0"], check=True)
    wait_for(queue_empty, "the array and the gather job")
    assert torch.load(ckpts()[0], weights_only=True)["step"] < 60

    status = sweep("status", cwd=origin)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert any(line.startswith("evaluate-betavae@tiny-1-0") and " failed" in line for line in lines), status.stdout
    assert "3 done, 1 failed" in status.stdout
    hint = status.stdout.split("resubmit the 1 not done (and nothing queued, running or done): ")[1].splitlines()[0]
    assert shlex.split(hint) == ["tcvae", "sweep", "submit", *given], status.stdout

    proc = sweep(*shlex.split(hint)[2:], cwd=origin)    # as status says, word for word
    assert "submitted 1 runs" in proc.stdout, proc.stdout + proc.stderr
    again = proc.stdout.split("array job ")[1].split()[0]
    wait_for(queue_empty, "the resubmitted task and the gather job")
    log = (origin / f".dvc/tmp/slurm/{again}_0.out").read_text()
    assert "resuming at step" in log and not ckpts(), log[-3000:]
    assert "4 done" in sweep("status", cwd=origin).stdout
    gathered = [d for d in (origin / ".dvc/tmp/slurm").iterdir() if d.is_dir()]
    assert len(gathered) == 1 and (gathered[0] / "figures/mig_vs_beta.png").stat().st_size > 5000

    reader = tmp_path / "reader"                       # git and the remote, nothing else
    run("git", "clone", "-q", origin, reader, cwd=tmp_path)
    out = run(*DVC, "repro", "--pull", cwd=reader)
    assert "Running stage 'train-" not in out and "Running stage 'evaluate-" not in out
    assert (reader / "data/figures/mig_vs_beta.png").stat().st_size > 5000
    # the cancelled-and-resumed run ends bit for bit where an uninterrupted one does
    model = reader / "data/runs/tiny/betavae/beta1/seed0/model.pt"
    resumed = weights(model)
    run(*DVC, "repro", "--force", "--single-item", "train-betavae@tiny-1-0", cwd=reader)
    uninterrupted = weights(model)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


@pytest.mark.parametrize("option,says", [("--time=10:00\r#SBATCH --wrap=x", "--time"), ("--time=soon", "--time"),
                                         ("--mem=16 G", "--mem"), ("--gres=gpu:1;x", "--gres"),
                                         ("--sbatch-line=--comment=a\rb", "control characters"),
                                         ("--sbatch-line=account", "starting with '-'"),
                                         ("--partition=a\nb", "--partition '--partition=a\\nb'")])
def test_submit_refuses_option_values_sbatch_does_not_take_before_any_cluster_call(project, option, says):
    """Checked before SLURM is looked for: exit 2, one line, on a machine without SLURM too."""
    from tests.conftest import run_cli

    code, out = run_cli("sweep", "submit", "--dry-run", option, cwd=project[0])
    assert code == 2 and says in out and len(out.strip().splitlines()) == 1, out
