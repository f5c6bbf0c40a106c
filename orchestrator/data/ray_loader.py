"""Clips decoded by Ray Data tasks on any free CPU of the cluster, streamed into a training worker
(`data.loader: ray_data`): GPU nodes with few cores plus CPU-only nodes keep the GPUs fed.

    RayDataLoader(dataset, batches)      one pass = one Ray Data execution
        chunks = list(batches)  (a batch sampler: lists of keys), exactly DataLoader's batches
        ray.data.range(#chunks) -> map(_decode_chunk): one task (1 CPU, any node) per batch,
                                    collate_skip_bad([dataset[key] for key in chunk])
        -> yielded in order (preserve_order), `prefetch_batches` decoded ahead

Each worker builds its epoch's pipeline from its own batch sampler instead of taking a split of one
driver-side dataset (`ray.train.get_dataset_shard`): a split hands rows to whichever worker asks
first and its executions are not numbered by our epoch, so neither the DataLoader's batches nor a
resumed run's epoch could be reproduced. Built from the batch sampler, a pass yields the DataLoader
path's batches for the same (seed, epoch, index) keys, bad videos skipped and counted by the
same `collate_skip_bad`, and a run restarted at clip p of epoch e decodes only what follows it
(`training/elastic.py`).
"""
from __future__ import annotations

import functools
import logging
import pickle


def _decode_chunk(dataset, chunks: list[list], row: dict) -> dict:
    """Ray Data task: decode and collate one batch; the batch travels pickled (a dict of tensors)."""
    import ray

    from orchestrator.data.dataset import collate_skip_bad

    batch = collate_skip_bad([dataset[key] for key in chunks[row["id"]]])
    return {"batch": pickle.dumps(batch, protocol=5), "node": ray.get_runtime_context().get_node_id()}


class RayDataLoader:
    """Batches of `dataset` for the lists of keys `batches` yields, each decoded by one Ray Data task.

    Iterating it yields what `DataLoader(dataset, batch_sampler=batches, collate_fn=collate_skip_bad)`
    yields, in the same order.

    Args:
        dataset: a VideoDataset; pickled into the tasks, so every node must see its paths.
        batches: a batch sampler (lists of keys: int or (epoch, index)), read anew at every pass:
            `set_epoch` on an `elastic.EpochBatches` works as it does with a DataLoader.
        prefetch_batches: batches decoded ahead of the one being consumed.
    After a pass, `decoded` and `decoded_here` count its batches, and those decoded on the node of
    the process that iterated (0 when the training node's CPUs are all held by training).
    """

    def __init__(self, dataset, batches, *, prefetch_batches: int = 4):
        self.dataset, self.batches, self.prefetch_batches = dataset, batches, prefetch_batches
        self.decoded = self.decoded_here = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        import ray

        chunks = [list(chunk) for chunk in self.batches]
        self.decoded = self.decoded_here = 0
        if not chunks:
            return
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the batches' order, as a DataLoader keeps it
        # Ray Data holds back half the CPUs it may use for operators' outputs; with this single map
        # that left half of them idle (1.2 of 2 tasks in flight here, 1.9 without)
        context.op_resource_reservation_enabled = False
        context.enable_progress_bars = False  # one execution per epoch: bars and banners would flood the log
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        here = ray.get_runtime_context().get_node_id()
        pipeline = (ray.data.range(len(chunks), override_num_blocks=len(chunks))
                    .map(functools.partial(_decode_chunk, self.dataset, chunks), num_cpus=1))
        for block in pipeline.iter_batches(batch_size=None, batch_format="numpy",
                                           prefetch_batches=self.prefetch_batches):
            for payload, node in zip(block["batch"], block["node"]):
                self.decoded += 1
                self.decoded_here += node == here
                yield pickle.loads(payload)
