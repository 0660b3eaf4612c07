"""Two processes through ``accelerate launch`` (DDP over gloo on the CPU) train what one process
trains at the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

HERE = Path(__file__).parent


def _run(cmd, cfg: dict, tmp_path: Path, name: str) -> dict:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd + [str(HERE / "train_driver.py"), str(path)], env=env, capture_output=True, text=True,
                          check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(Path(cfg["output_dir"], "run.json").read_text())


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_at_the_same_global_batch(tmp_path, pairs):
    base = dict(dataset_config=str(pairs), resolution=64, max_train_steps=4, mixed_precision="no", network_dim=4,
                learning_rate=1e-3, save_state=False, seed=0, lr_scheduler="linear")
    one = _run([sys.executable], {**base, "train_batch_size": 2, "output_dir": str(tmp_path / "one")}, tmp_path, "one")
    # On a machine without a GPU, accelerate's multi-process launcher + Accelerator(cpu=True) gives DDP over gloo
    # (`accelerate launch --cpu` alone starts a single process unless MPI is set up).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    two = _run(launch, {**base, "train_batch_size": 1, "output_dir": str(tmp_path / "two")}, tmp_path, "two")
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["distributed_type"].endswith("MULTI_CPU") and two["backend"] == "gloo"
    assert one["losses"] == pytest.approx(two["losses"], rel=1e-4)
    a = load_file(str(tmp_path / "one" / "instruct-identity-lora.safetensors"))
    b = load_file(str(tmp_path / "two" / "instruct-identity-lora.safetensors"))
    assert a.keys() == b.keys()
    scale = max(a[k].abs().max().item() for k in a if k.endswith("lora_up.weight"))
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert scale > 1e-3 and diff < 1e-3 * scale  # same LoRA up to float summation order
