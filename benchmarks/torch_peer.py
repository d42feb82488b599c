"""Our train step against a plain PyTorch copy of the same model, side by side on this host.

The peer is a direct PyTorch transcription of atlas_t5x.models.DecoderLM (tied embedding, L
parallel pre-norm blocks x + Dropout(Attn(n)) + Dropout(MLP(n)) with one RMSNorm each, rotary
positions, causal + packed-segment attention through `F.scaled_dot_product_attention`, SiLU-gated
MLP, parameter-free final RMSNorm, logits scaled by d**-0.5) with the same optimizer (global-norm
clipping at 1.0, AdamW b1 0.9, b2 0.95, eps 1e-8, weight decay 0.1 on matrices only), in fp32,
under `torch.compile` (the default inductor backend). Both sides train on the same synthetic
packed batch (benchmarks/train_throughput.py `synthetic_batch`: two segments per row) with
dropout 0.1. The peer computes the loss the plain way, full logits + `F.cross_entropy`.

Side by side: the driver starts two persistent worker processes (one JAX, one PyTorch), lets
each compile and warm up, then alternates them — `--steps` timed steps of one, then of the
other, for `--rounds` rounds — so both see the same machine load; only one computes at a time.
It prints every round (with the load average) and the median tokens/s of each side and their
ratio. torch is a benchmark-only dependency (CPU wheel:
`pip install torch --index-url https://download.pytorch.org/whl/cpu`).

    python benchmarks/torch_peer.py --scale=scale4 --batch=8 --seq=512 --rounds=3 --steps=2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="scale0", help="model scale (scale0..46, tiny0..3)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--vocab_size", type=int, default=64512)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two sides")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per side per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: the CPUs we may use)")
    parser.add_argument("--no_compile", action="store_true", help="peer in eager mode")
    parser.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.batch, args.seq, args.rounds, args.steps, args.vocab_size) <= 0 or args.warmup < 0:
        parser.error("batch, seq, rounds, steps and vocab_size must be positive, warmup >= 0")
    return args


# ----------------------------------------------------------------------------- workers


def _batch(args) -> dict:
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from train_throughput import synthetic_batch

    return synthetic_batch(args.batch, args.seq, args.vocab_size)


def jax_worker(args):
    """(step_fn() -> None blocking until done); our trainer's step as train_throughput times it."""
    import jax

    sys.path.insert(0, str(REPO_ROOT))
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from train_throughput import make_train_step

    from atlas_t5x import models, optim

    cfg = models.get_model_config(args.scale, vocab_size=args.vocab_size, dropout_rate=args.dropout)
    model = models.DecoderLM(cfg)
    optimizer = optim.make_optimizer(optim.make_schedule("constant", total_steps=1, warmup_steps=0))
    batch = jax.device_put(_batch(args))
    params = jax.jit(lambda k: model.init(k, batch["inputs"])["params"])(jax.random.PRNGKey(0))
    params = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x, params,
                          is_leaf=lambda x: hasattr(x, "unbox"))
    state = {"params": params, "opt": optimizer.init(params), "i": 0}
    step = make_train_step(model, optimizer)
    rng = jax.random.PRNGKey(1)

    def run():
        state["params"], state["opt"], loss = step(state["params"], state["opt"], batch,
                                                   jax.random.fold_in(rng, state["i"]))
        state["i"] += 1
        return float(loss)

    return run


def torch_worker(args):
    """(step_fn() -> loss) of the plain PyTorch peer, compiled."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    sys.path.insert(0, str(REPO_ROOT))
    from atlas_t5x import models

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    cfg = models.get_model_config(args.scale, vocab_size=args.vocab_size)
    d, heads, d_kv, d_ff, p = cfg.d_model, cfg.num_heads, cfg.d_kv, cfg.d_ff, args.dropout

    def rms(x, eps=1e-6):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    def rotary(x, positions):  # x [B, T, H, D], positions [B, T]
        half = x.shape[-1] // 2
        freq = 10_000.0 ** (-torch.arange(half, dtype=torch.float32) / half)
        angle = positions[:, :, None, None].float() * freq
        sin, cos = angle.sin(), angle.cos()
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.Parameter(torch.ones(d))
            self.q, self.k, self.v = (nn.Linear(d, heads * d_kv, bias=False) for _ in range(3))
            self.o = nn.Linear(heads * d_kv, d, bias=False)
            self.wi_0, self.wi_1 = nn.Linear(d, d_ff, bias=False), nn.Linear(d, d_ff, bias=False)
            self.wo = nn.Linear(d_ff, d, bias=False)

        def forward(self, x, positions, mask):
            b, t, _ = x.shape
            n = rms(x) * self.norm
            q = rotary(self.q(n).view(b, t, heads, d_kv), positions).transpose(1, 2)
            k = rotary(self.k(n).view(b, t, heads, d_kv), positions).transpose(1, 2)
            v = self.v(n).view(b, t, heads, d_kv).transpose(1, 2)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            attn = self.o(ctx.transpose(1, 2).reshape(b, t, heads * d_kv))
            mlp = self.wo(F.silu(self.wi_0(n)) * self.wi_1(n))
            return x + F.dropout(attn, p, self.training) + F.dropout(mlp, p, self.training)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Parameter(torch.randn(cfg.vocab_size, d))
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.num_layers))

        def forward(self, tokens, positions, segments, targets, weights):
            t = tokens.shape[1]
            causal = torch.ones(t, t, dtype=torch.bool).tril()
            mask = (causal & (segments[:, :, None] == segments[:, None, :]))[:, None]
            x = F.dropout(self.embedding[tokens], p, self.training)
            for block in self.blocks:
                x = block(x, positions, mask)
            logits = (rms(x) * d ** -0.5) @ self.embedding.T
            nll = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
            return (nll * weights.reshape(-1)).sum() / weights.sum()

    model = Decoder()
    decay = [q for q in model.parameters() if q.ndim >= 2]
    no_decay = [q for q in model.parameters() if q.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=2e-4, betas=(0.9, 0.95), eps=1e-8)
    batch = {k: torch.from_numpy(v) for k, v in _batch(args).items()}
    batch = {k: (v.long() if v.dtype == torch.int32 and k in ("inputs", "targets") else v) for k, v in batch.items()}
    forward = model if args.no_compile else torch.compile(model)

    @torch.compile(disable=args.no_compile)
    def update():
        optimizer.step()

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss = forward(batch["inputs"], batch["positions"], batch["segments"], batch["targets"], batch["weights"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        update()
        return float(loss.detach())

    model.train()
    return run


def worker_main(args) -> int:
    """Builds one side, then answers commands on stdin: 'run N' → JSON {times, loss} on stdout."""
    start = time.perf_counter()
    run = jax_worker(args) if args.worker == "jax" else torch_worker(args)
    loss = run()  # compiles
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup):
        loss = run()
    print(json.dumps({"ready": True, "compile_s": compile_s, "loss": loss}), flush=True)
    for line in sys.stdin:
        n = int(line.split()[1])
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            loss = run()
            times.append(time.perf_counter() - t0)
        print(json.dumps({"times": times, "loss": loss}), flush=True)
    return 0


# ----------------------------------------------------------------------------- driver


class _Worker:
    def __init__(self, side: str, argv: list[str]):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        self.side = side
        self.proc = subprocess.Popen([sys.executable, __file__, *argv, f"--worker={side}"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self._read()

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"{self.side} worker exited (code {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, steps: int) -> dict:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    tokens = args.batch * args.seq
    print(f"scale={args.scale} batch={args.batch} seq={args.seq} V={args.vocab_size} fp32 dropout={args.dropout}; "
          f"peer: PyTorch {'eager' if args.no_compile else 'torch.compile'}; {os.cpu_count()} CPUs", flush=True)
    workers = []
    try:
        for side in ("jax", "torch"):  # built one after the other: compilation does not overlap
            workers.append(_Worker(side, argv))
            print(f"{side}: compiled in {workers[-1].ready['compile_s']:.1f} s, loss {workers[-1].ready['loss']:.4f}",
                  flush=True)
        rates = {"jax": [], "torch": []}
        for r in range(args.rounds):
            for w in workers:
                load = os.getloadavg()[0]
                result = w.run(args.steps)
                best = min(result["times"])
                rates[w.side].append(tokens / best)
                print(f"round {r + 1} {w.side:5s}: best step {best:7.2f} s ({tokens / best:8.1f} tok/s) "
                      f"of {len(result['times'])}; load average {load:.1f}", flush=True)
        ratios = [a / b for a, b in zip(rates["jax"], rates["torch"])]
        jax_rate, torch_rate = statistics.median(rates["jax"]), statistics.median(rates["torch"])
        print(f"median tok/s: atlas_t5x {jax_rate:.1f}, torch {torch_rate:.1f}; ratio per round "
              f"{', '.join(f'{x:.2f}' for x in ratios)}; median ratio {statistics.median(ratios):.2f}x")
    finally:
        for w in workers:
            w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
