"""GPU placement for parallel workers, on CPU with simulated devices: N workers never share a device."""

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from tcvae.devices import claim_gpu
    device = claim_gpu(2, Path(sys.argv[1]), poll=0.01, timeout=60)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == str(device)
    start = time.time(); time.sleep(0.4); end = time.time()
    print(device, start, end)
""")


def test_workers_take_distinct_free_devices(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "locks")], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(6)]
    spans = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        device, start, end = out.split()
        spans.append((int(device), float(start), float(end)))
    assert {d for d, _, _ in spans} == {0, 1}
    for i, (d, s, e) in enumerate(spans):
        for d2, s2, e2 in spans[i + 1:]:
            assert d != d2 or e <= s2 or e2 <= s, f"two workers held device {d} at once"


def test_a_killed_worker_frees_its_device(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from tcvae.devices import claim_gpu; print(claim_gpu(2, Path(sys.argv[1])), flush=True); "
                               "time.sleep(60)", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "0"
    check = [sys.executable, "-c", "import sys; from pathlib import Path; from tcvae.devices import claim_gpu; "
             "print(claim_gpu(2, Path(sys.argv[1]), timeout=5))", str(tmp_path)]
    assert subprocess.run(check, cwd=ROOT, capture_output=True, text=True).stdout.strip() == "1"
    holder.kill()
    holder.wait()
    assert subprocess.run(check, cwd=ROOT, capture_output=True, text=True).stdout.strip() == "0"
    from tcvae.devices import claim_gpu
    assert claim_gpu(1) == 0                                   # one device: nothing to share, no lock
