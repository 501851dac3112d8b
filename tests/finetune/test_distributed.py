"""Data-parallel fine-tuning: rank samplers, exact metric reduction over 2 gloo processes, and
`torchrun --nproc_per_node 2 -m specaware.finetune` against a 1-process run on the same data."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from fixtures import write_export, write_segmentation_pair
from safetensors.torch import load_file

from specaware.finetune.distributed import DistEnv, RankSampler, local_batch_size
from specaware.finetune.train import evaluate

ROOT = Path(__file__).parents[2]


def test_eval_sampler_gives_every_sample_to_exactly_one_rank():
    shares = [list(RankSampler(11, r, 3, shuffle=False)) for r in range(3)]
    assert sorted(sum(shares, [])) == list(range(11))
    assert [len(s) for s in shares] == [4, 4, 3]


def test_train_sampler_ranks_split_the_one_process_batches():
    """Global batch 4 over 2 ranks (2 each): step i of the ranks together holds exactly the
    samples of step i of one process, so DDP's averaged gradient is the one-process gradient."""
    one = list(RankSampler(8, 0, 1, shuffle=True, seed=3))
    ranks = [list(RankSampler(8, r, 2, shuffle=True, seed=3)) for r in range(2)]
    for step in range(2):
        together = ranks[0][2 * step:2 * step + 2] + ranks[1][2 * step:2 * step + 2]
        assert sorted(together) == sorted(one[4 * step:4 * step + 4])


def test_train_sampler_pads_so_every_rank_takes_as_many_steps():
    lengths = {len(list(RankSampler(7, r, 2, shuffle=True))) for r in range(2)}
    assert lengths == {4}


def test_train_sampler_order_changes_with_the_epoch_only():
    a, b = RankSampler(20, shuffle=True, seed=1), RankSampler(20, shuffle=True, seed=1)
    first = list(a)
    a.set_epoch(1)
    assert list(b) == first and list(a) != first


def test_global_batch_must_divide_by_the_process_count():
    assert local_batch_size(8, DistEnv(0, 4)) == 2
    with pytest.raises(ValueError, match="optim.batch_size=6 .* 4 processes"):
        local_batch_size(6, DistEnv(0, 4))


class _Fixed(torch.nn.Module):
    """Predicts class (sum of the image) mod 3 with a fixed linear map: no randomness."""

    def forward(self, batch):
        s = batch["image"].sum(dim=(1, 2, 3))
        return torch.stack([torch.cos(s), torch.sin(s), torch.cos(2 * s)], 1)


def _batches(rank: int, world: int):
    """13 samples (not a multiple of 2: no padding may count one twice), 2 per batch."""
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((13, 2, 3, 3), dtype=np.float32))
    labels = torch.from_numpy(rng.integers(0, 3, 13))
    idx = list(RankSampler(13, rank, world))
    return [{"image": images[idx[i:i + 2]], "label": labels[idx[i:i + 2]]}
            for i in range(0, len(idx), 2)]


def _worker(rank: int, world: int, port: int, out: str):
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=world)
    try:
        env = DistEnv(rank, world)
        cm, metrics = evaluate(_Fixed(), _batches(rank, world), "classification", 3,
                               torch.device("cpu"), env=env)
        if rank == 0:
            np.save(out, cm)
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_sum_confusion_matrices_to_the_one_process_metrics(tmp_path):
    one, metrics = evaluate(_Fixed(), _batches(0, 1), "classification", 3, torch.device("cpu"))
    out = str(tmp_path / "cm.npy")
    mp.start_processes(_worker, args=(2, _free_port(), out), nprocs=2, start_method="spawn",
                       join=True)
    two = np.load(out)
    assert two.sum() == 13
    np.testing.assert_array_equal(two, one)


SMALL = ["optim.epochs=2", "optim.batch_size=2", "model.decoder_width=16", "protocol.seeds=[0]",
         "protocol.tile=16", "protocol.val_fraction=0.25", "protocol.test_fraction=0.25",
         "optim.lr=3e-3", "optim.encoder_lr=1e-3", "model.freeze=none", "progress=false"]


def _finetune_argv(image, mask, export, out) -> list[str]:
    return ["--task", "segmentation", str(ROOT / "configs" / "finetune" / "segmentation.yaml"),
            "--init", "pretrained", "--checkpoint", str(export), "--out", str(out),
            f"data.images=[{image}]", f"data.masks=[{mask}]", *SMALL]


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": str(ROOT)}
    env.pop("SPECAWARE_FAULT", None)
    return env


def _torchrun(argv: list[str]) -> subprocess.CompletedProcess:
    """2 processes on 127.0.0.1; a port taken between picking and binding it is retried."""
    for _ in range(3):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                               "2", "--master_addr", "127.0.0.1", "--master_port",
                               str(_free_port()), "-m", "specaware.finetune", *argv],
                              env=_env(), capture_output=True, text=True, timeout=300)
        if "address already in use" not in done.stderr.lower():
            break
    return done


def test_torchrun_two_processes_match_one_process(tmp_path):
    """12 tiles of 16 px: 6 train (3 global batches of 2), 3 val, 3 test; the same run on 1 and
    2 processes follows the same trajectory (float rounding apart) to identical test metrics."""
    image, mask = write_segmentation_pair(tmp_path, h=48, w=64)
    export, _ = write_export(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    argv = _finetune_argv(image, mask, export, one)
    subprocess.run([sys.executable, "-m", "specaware.finetune", *argv], env=_env(), check=True,
                   capture_output=True, timeout=300)
    done = _torchrun(_finetune_argv(image, mask, export, two))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("segmentation  miou") == 1      # one table, from rank 0
    a = json.loads((one / "pretrained/seed0/metrics.json").read_text())
    b = json.loads((two / "pretrained/seed0/metrics.json").read_text())
    assert sum(b["support"]) == sum(a["support"]) == 3 * 16 * 16     # every test pixel once
    for key in ("miou", "oa", "kappa"):
        assert b[key] == pytest.approx(a[key], abs=1e-9)
    wa = load_file(str(one / "pretrained/seed0/best.safetensors"))
    wb = load_file(str(two / "pretrained/seed0/best.safetensors"))
    base = load_file(str(export))
    assert wa.keys() == wb.keys()
    # same trajectory: the two runs differ by far less than training moved the weights (Adam
    # turns float-rounding differences of near-zero gradients into differences of order lr)
    encoder = [k for k in wa if k in base]
    moved = sum(float((wa[k] - base[k]).norm() ** 2) for k in encoder) ** 0.5
    apart = sum(float((wa[k] - wb[k]).norm() ** 2) for k in wa) ** 0.5
    assert moved > 0 and apart < 0.02 * moved, (apart, moved)


def test_a_global_batch_that_does_not_split_is_a_config_error_before_any_work(monkeypatch):
    from specaware.config import ConfigError, build
    from specaware.finetune.config import FinetuneConfig
    from specaware.finetune.runner import check_run
    monkeypatch.setenv("WORLD_SIZE", "4")                 # as torchrun sets it
    with pytest.raises(ConfigError, match="optim.batch_size=6 .* 4 processes"):
        check_run(build(FinetuneConfig, [], ["optim.batch_size=6"]))
    check_run(build(FinetuneConfig, [], ["optim.batch_size=8"]))
