"""Two Gloo processes on CPU train through the same code path and end with identical weights."""
import os
import socket

import torch
import torch.multiprocessing as mp

from synth_helpers import tiny_config, with_an_empty_image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg_dict: dict, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from poseseg.config import config_from_dict
    from poseseg.engine import distributed as dist
    from poseseg.engine.train import train

    result = train(config_from_dict(cfg_dict), quiet=True)
    torch.save(result.model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.cleanup()


def test_two_gloo_ranks_end_with_identical_weights_even_when_one_sees_no_people(synth_data, tmp_path):
    # two images, one without people, batch 1 per rank: every step one rank has an empty image
    train_json = with_an_empty_image(synth_data, tmp_path / "two.json")
    cfg = tiny_config(synth_data, tmp_path / "runs", **{
        "data.train_json": train_json, "data.val_json": "", "train.batch_size": 1, "train.iters": 3,
        "train.checkpoint_every": 100})
    mp.spawn(_worker, args=(2, _free_port(), cfg.to_dict(), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:3]
    initial = __import__("poseseg").build_model(cfg).state_dict()
    assert any(not torch.equal(a[k], initial[k]) for k in a), "the weights never changed"
    assert (tmp_path / "runs").is_dir() and len(list((tmp_path / "runs").iterdir())) == 1  # one run folder
