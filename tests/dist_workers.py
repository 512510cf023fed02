"""Functions run by each process of the multi-process tests (``torch.multiprocessing.spawn``).

Each joins a gloo group through a file store, does its share, and either asserts (a failure in
any process fails the test) or saves what the test compares into ``out``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from acn.bank.codebank import CodeBank
from acn.bank.placement import ReplicatedPlacement, ShardedPlacement
from acn.config import Config
from acn.distributed import Ranks, shard_range, standard_normal


def _join(rank: int, world: int, store: str) -> Ranks:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    return Ranks(rank, world)


def whole_bank(n: int = 600, d: int = 6) -> CodeBank:
    """A random bank with exact duplicate rows (ties) that straddle shard boundaries."""
    bank = CodeBank(n, d, chunk_size=97, generator=torch.Generator().manual_seed(0))
    bank.update(torch.arange(0, 40), bank.codes[n - 40 :].clone())
    return bank


def queries_for(bank: CodeBank, b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``b`` queries near distinct bank rows (some exactly on a row), and those rows."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(bank.num_codes, generator=g)[:b]
    q = bank.codes[rows] + 0.05 * torch.randn(b, bank.dim, generator=g)
    q[::3] = bank.codes[rows[::3]]
    return q, rows


def my_shard(bank: CodeBank, ranks: Ranks) -> CodeBank:
    lo, hi = shard_range(bank.num_codes, ranks)
    shard = CodeBank(hi - lo, bank.dim, chunk_size=bank.chunk_size)
    shard.update(torch.arange(hi - lo), bank.codes[lo:hi])
    return shard


def sharded_equals_whole(rank: int, world: int, store: str) -> None:
    """The sharded search, lookup, draw and update equal the whole bank's, exactly."""
    ranks = _join(rank, world, store)
    bank = whole_bank()
    shard = my_shard(bank, ranks)
    access = ShardedPlacement(ranks, bank.num_codes)
    shard.placement = access  # in training mode (a new module's): this rank's slice
    queries, rows = queries_for(bank, 24, seed=1)
    for k in (1, 5, 17, 40):
        for exclude in (rows, None, torch.stack([rows, (rows + 1) % bank.num_codes], dim=1)):
            got_d, got_i = access.knn(shard, queries, k, exclude)
            want_d, want_i = bank.knn(queries, k, exclude)
            assert torch.equal(got_i, want_i), (k, got_i, want_i)
            assert torch.equal(got_d, want_d), k
    picked = torch.randint(bank.num_codes, (50,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(access.lookup(shard, picked), bank.codes[picked])
    # A training batch: this rank's slice of the global batch, the same draws as one process.
    local = queries.shape[0] // world
    mine = slice(rank * local, (rank + 1) * local)
    g_one, g_many = (torch.Generator().manual_seed(3) for _ in range(2))
    want_n, want_c = bank.draw(queries, 5, rows, g_one)
    got_n, got_c = shard.draw(queries[mine], 5, rows[mine], g_many)
    assert torch.equal(got_n, want_n[mine]) and torch.equal(got_c, want_c[mine])
    eps = standard_normal(queries[mine], g_many, ranks)
    assert torch.equal(eps, standard_normal(queries, g_one)[mine])
    fresh = torch.randn(queries.shape, generator=torch.Generator().manual_seed(4))
    shard.write(rows[mine], fresh[mine])
    bank.update(rows, fresh)
    lo, hi = shard_range(bank.num_codes, ranks)
    assert torch.equal(shard.codes, bank.codes[lo:hi])
    assert torch.equal(shard.sq_norms, bank.sq_norms[lo:hi])
    dist.destroy_process_group()


def replicated_equals_single(rank: int, world: int, store: str) -> None:
    """Replicated draws (plain and unique-neighbour) and updates equal one process's."""
    ranks = _join(rank, world, store)
    queries, rows = queries_for(whole_bank(), 24, seed=5)
    local = queries.shape[0] // world
    mine = slice(rank * local, (rank + 1) * local)
    for unique in (False, True):
        one, many = whole_bank(), whole_bank()
        many.placement = ReplicatedPlacement(ranks)
        g_one, g_many = (torch.Generator().manual_seed(6) for _ in range(2))
        for _ in range(3):  # several batches, so that the unique constraint's state matters
            want_n, want_c = one.draw(queries, 5, rows, g_one, unique)
            got_n, got_c = many.draw(queries[mine], 5, rows[mine], g_many, unique)
            assert torch.equal(got_n, want_n[mine]) and torch.equal(got_c, want_c[mine])
            one.write(rows, queries + 1)
            many.write(rows[mine], queries[mine] + 1)
            for name in ("codes", "sq_norms", "used"):
                assert torch.equal(getattr(many, name), getattr(one, name)), name
    dist.destroy_process_group()


def run_steps(config: Config, ranks: Ranks, steps: int) -> dict:
    """``steps`` training steps as :func:`acn.train.loop.train` takes them (the model prepared by
    :func:`acn.train.parallel.prepare`, DDP with several processes), on this rank's share of the
    global batches. Returns the full state (the sharded bank assembled; rank 0 only then), this
    rank's own bank rows, and the generator's state."""
    from acn.data.datasets import load_splits, train_loader
    from acn.model import ACN
    from acn.train import parallel

    device = torch.device("cpu")
    splits, info = load_splits(config.data, config.seed)
    torch.manual_seed(config.seed)
    init = torch.Generator().manual_seed(config.seed)
    model = ACN(config, info, len(splits["train"]), generator=init)
    model, net = parallel.prepare(model, config, ranks, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    generator = torch.Generator().manual_seed(config.seed + 1)
    loader = train_loader(splits["train"], config, 0, ranks.rank, ranks.world)
    for _, batch in zip(range(steps), loader, strict=False):
        terms = net(batch["image"], index=batch["index"], generator=generator, update_bank=True)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
    parallel.check_replicas(model, ranks, device)
    return {
        "state": parallel.full_state_dict(model, ranks),
        "own_rows": model.bank.codes.clone(),
        "generator": generator.get_state(),
    }


def train_steps(rank: int, world: int, store: str, config: Config, steps: int, out: str) -> None:
    """:func:`run_steps` in a group; saves ``out/rank{rank}.pt``."""
    ranks = _join(rank, world, store)
    torch.save(run_steps(config, ranks, steps), Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def replicas_must_agree(rank: int, world: int, store: str, config: Config) -> None:
    """:func:`acn.train.parallel.check_replicas` passes on equal replicas and fails when one rank's
    bank row differs (the check must be able to fail)."""
    from acn.data.datasets import load_splits
    from acn.errors import TrainingError
    from acn.model import ACN
    from acn.train import parallel

    ranks = _join(rank, world, store)
    splits, info = load_splits(config.data, config.seed)
    init = torch.Generator().manual_seed(config.seed)
    model = ACN(config, info, len(splits["train"]), generator=init)
    model, net = parallel.prepare(model, config, ranks, torch.device("cpu"))
    del net  # the DDP wrapper must go before the group does, or its destructor aborts
    parallel.check_replicas(model, ranks, torch.device("cpu"))
    if rank == world - 1:
        model.bank.codes[7, 0] += 1e-6
    try:
        parallel.check_replicas(model, ranks, torch.device("cpu"))
    except TrainingError as exc:
        assert "diverged" in str(exc)
    else:
        raise AssertionError("diverged replicas were not noticed")
    dist.destroy_process_group()
