"""A training loop that bends instead of breaking: its batch shrinks when memory runs short and grows back after.

On a trainguard instance (the worker library is on every worker's PYTHONPATH):

    sudo env PATH="$PATH" trainguard launch --workers 4 --batch-size 16 -- python3 train_bend.py --batch {batch}

Elsewhere, with the library beside it or on PYTHONPATH (PYTHONPATH=healthcheck/guard in this repository).

No GPU and no framework, but memory that follows the batch as a real job's does: a "model" of fixed size, a data
loader that keeps up to --prefetch batches ready and reads one more every --load-seconds (a loader's queue fills
while the job runs, so a short canary sees less than the job will use), and the step's activations, in a buffer
kept at the batch's size as a caching allocator keeps its blocks. Every page is written at each step. When the
advisor changes the batch size the loader is made again at the new size, as a PyTorch DataLoader is, its queue
starts empty, and the activations' buffer is made again. Memory comes from anonymous mmap, as large tensors do, so
what is freed goes back to the kernel at once.

Every --checkpoint-every steps it writes a checkpoint in the worker's results folder (whole or not at all) and
asks for a push without waiting; at the end, result.json with the batch sizes it went through, pushed before it
exits. A CUDA job would also call advisor.out_of_memory() when it catches torch.cuda.OutOfMemoryError.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import mmap
import os
import sys
import time

import trainguard_worker as tg

MIB = 1 << 20
PAGE = mmap.PAGESIZE


class Block:
    """Memory the kernel really gives: every page written once, and touched again on each step."""

    def __init__(self, size: int) -> None:
        self.memory = mmap.mmap(-1, max(PAGE, size))
        self.touch(1)

    def touch(self, value: int) -> None:
        self.memory[::PAGE] = bytes([value % 256]) * len(range(0, len(self.memory), PAGE))

    def free(self) -> None:
        self.memory.close()


class Loader:
    """Batches made ready ahead of the step, one more every `load_seconds`, at most `prefetch` of them."""

    def __init__(self, batch: int, sample_bytes: int, prefetch: int, load_seconds: float) -> None:
        self.batch, self.sample_bytes, self.prefetch, self.load_seconds = batch, sample_bytes, prefetch, load_seconds
        self.ready: collections.deque[Block] = collections.deque()
        self.loaded_at = time.monotonic()

    def step(self) -> None:
        if len(self.ready) < self.prefetch and time.monotonic() - self.loaded_at >= self.load_seconds:
            self.ready.append(Block(self.batch * self.sample_bytes))
            self.loaded_at = time.monotonic()

    def touch(self, value: int) -> None:
        for block in self.ready:
            block.touch(value)

    def close(self) -> None:
        while self.ready:
            self.ready.popleft().free()


def arguments(argv: list[str] | None) -> argparse.Namespace:
    given = tg.budget()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=given.batch_size or 16, help="the batch to start with (16)")
    parser.add_argument("--min-batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--step-seconds", type=float, default=0.5, help="compute per step (a sleep)")
    parser.add_argument("--model-mib", type=float, default=16.0)
    parser.add_argument("--sample-mib", type=float, default=1.0, help="memory per sample in a batch")
    parser.add_argument("--prefetch", type=int, default=12, help="batches the loader keeps ready")
    parser.add_argument("--load-seconds", type=float, default=4.0, help="how long the loader takes per batch")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--results", default=given.results_dir or "results", help="where results go")
    return parser.parse_args(argv)


def write_json(path: str, document: object) -> None:
    """What torch.save(state, path) would do for a real model."""
    with open(path, "w") as handle:
        json.dump(document, handle)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    os.makedirs(args.results, exist_ok=True)
    worker = tg.budget().worker
    sample_bytes = int(args.sample_mib * MIB)
    model = Block(int(args.model_mib * MIB))
    # After the model: what is in use now is fixed; what comes after grows with the batch.
    advisor = tg.BatchAdvisor(args.batch, minimum=args.min_batch)
    batch = advisor.batch_size()
    loader = Loader(batch, sample_bytes, args.prefetch, args.load_seconds)
    activations = Block(batch * sample_bytes)
    started = time.monotonic()
    for step in range(1, args.steps + 1):
        size = advisor.batch_size()
        if size != batch:  # a new DataLoader at the new size; the old one's batches are freed, and the activations
            loader.close()
            activations.free()
            batch = size
            loader = Loader(batch, sample_bytes, args.prefetch, args.load_seconds)
            activations = Block(batch * sample_bytes)
        loader.step()
        for block in (model, activations):
            block.touch(step)
        loader.touch(step)
        time.sleep(args.step_seconds)
        if step % 20 == 0 or step == 1:
            use = advisor.usage
            fill = f"{use.fill:.0%}" if use else "?"
            print(f"step {step}/{args.steps} batch {batch} fill {fill} level {advisor.level}", flush=True)
        if step % args.checkpoint_every == 0:
            path = os.path.join(args.results, "checkpoint.json")
            state = {"step": step, "batch": batch, "weights": [step % 7] * 4096}
            tg.checkpoint(path, functools.partial(write_json, document=state), wait=False)
    loader.close()
    activations.free()
    result = {
        "worker": worker,
        "steps": args.steps,
        "seconds": round(time.monotonic() - started, 1),
        "batch_sizes": advisor.batch_sizes,
        "changes": [change.__dict__ for change in advisor.changes],
        "finished": True,
    }
    pushed = tg.checkpoint(os.path.join(args.results, "result.json"), functools.partial(write_json, document=result))
    print(f"done: {args.steps} steps, batch sizes {advisor.batch_sizes}; push: {pushed.message if pushed else '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
