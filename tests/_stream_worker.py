"""One process of the streaming-pipeline multi-host test (tests/test_streaming.py).

Builds `make_train_pipeline` over a MADLAD-layout folder in a jax.distributed (gloo) job, reads
`--steps` batches, assembles each global batch with jax.make_array_from_process_local_data (the
trainer's `global_batch_from_host_rows`), gathers it back to every host, and writes to --out:
host-local targets, global targets, per-step accounting and the pipeline state after
`--state_at` steps (all-gathered). `--state_in` resumes from such a state first. `--cache_dir`
reads the languages' seqio cache (tests/test_preprocess_cache.py).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from atlas_t5x import partitioning, trainer  # noqa: E402
from atlas_t5x.data import pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--state_at", type=int, default=-1)
    parser.add_argument("--state_in", default="")
    parser.add_argument("--num_input_shards", type=int, default=2)
    parser.add_argument("--coordinator", default="")
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--process_id", type=int, default=0)
    parser.add_argument("--cache_dir", default="", help="seqio cache folder (make_train_pipeline.cache_dirs)")
    parser.add_argument("--use_cached", default="auto", choices=["auto", "true", "false"])
    args = parser.parse_args()
    if args.num_processes > 1:
        partitioning.maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    pipe = pipeline.make_train_pipeline({"en": 0.5, "fr": 0.3, "yo": 0.2}, vocab="byte", seq_len=32,
                                        global_batch=8, seed=5, root=args.root, block_docs=16,
                                        num_input_shards=args.num_input_shards,
                                        use_cached={"auto": "auto", "true": True, "false": False}[args.use_cached],
                                        cache_dirs=[args.cache_dir] if args.cache_dir else [])
    if args.state_in:
        with open(args.state_in, encoding="utf-8") as f:
            pipe.set_state(json.load(f))
    mesh = partitioning.make_mesh(partitioning.MeshConfig())
    sharding = partitioning.batch_sharding(mesh)
    host, full, accounting, state = [], [], [], None
    for step in range(args.steps):
        if step == args.state_at:
            state = pipe.get_state()
        batch = next(pipe)
        host.append(batch["decoder_target_tokens"])
        global_batch = trainer.global_batch_from_host_rows(batch, sharding)
        full.append(np.asarray(multihost_utils.process_allgather(global_batch["decoder_target_tokens"], tiled=True)))
        accounting.append(pipe.accounting().tokens_by_lang)
    np.savez(args.out + ".npz", host=np.stack(host), full=np.stack(full))
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump({"accounting": accounting, "state": state, "process_count": jax.process_count(),
                   "owned_shards": pipe.owned_shards, "cache_dirs": pipe.cache_dirs}, f)


if __name__ == "__main__":
    main()
