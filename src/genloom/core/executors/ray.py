"""The Ray executor: the same shard function as Ray tasks, on a cluster or a local runtime.

A task carries everything a worker needs (the store's URL, the steps' configs, its input shard's
key) and no path of the driver's machine, so on a cluster whose store is object storage (or a
filesystem every node mounts at the same place) any node runs any shard. A shard that reads the
driver's own files (``ShardTask.on_driver``: file sources, the Python docs, a SQLite database) is
pinned to the driver's node. ``placements`` counts the shards of the last ``map`` per node id.

The shard function goes with each task by value (a module-level function pickles to its name), not
as a ``ray.put`` object: an object owned by the driver is one more thing a task on another node must
fetch from the driver, and under load that fetch failed once as ``OwnerDiedError`` with the driver
alive. A task that still fails that way (its input object lost, not the shard's own error) is sent
again, at most ``RESUBMITS`` times: a shard writes only under its content key, so running it again
is safe.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from genloom.core.errors import MissingDependencyError

RESUBMITS = 2  # times a task whose input object was lost is sent again
log = logging.getLogger("genloom.executor")


def _placed(fn: Callable[[Any], Any], item: Any) -> tuple[str, Any]:
    """Run ``fn(item)`` in a Ray worker; return (this node's id, the result)."""
    import ray

    return ray.get_runtime_context().get_node_id(), fn(item)


class RayExecutor:
    """Run shards as Ray tasks; ``address=None`` starts (and later stops) a local Ray runtime."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError as e:
            raise MissingDependencyError("ray", "pip install 'genloom[ray]'") from e
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self._ray = ray
        self._started = False
        self.placements: Counter[str] = Counter()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if address:
                ray.init(address=address, **kwargs)
            else:  # a runtime of its own, never a cluster that `ray start` left running on this machine
                ray.init(address="local", num_cpus=num_cpus, **kwargs)
            self._started = True
        self._driver_node = ray.get_runtime_context().get_node_id()

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = ray.remote(num_cpus=1)(_placed)
        on_driver = remote.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=self._driver_node, soft=False)
        )

        def submit(item: Any) -> Any:
            return (on_driver if getattr(item, "on_driver", False) else remote).remote(fn, item)

        refs = [submit(item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        resubmits = [0] * len(items)
        results: list[Any] = [None] * len(items)
        self.placements = Counter()
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index.pop(ref)
                try:
                    node, results[i] = ray.get(ref)
                except (ray.exceptions.RayTaskError, ray.exceptions.ObjectLostError) as e:
                    lost = isinstance(e, ray.exceptions.ObjectLostError) or isinstance(
                        getattr(e, "cause", None), ray.exceptions.ObjectLostError
                    )
                    if not lost or resubmits[i] >= RESUBMITS:
                        raise
                    resubmits[i] += 1
                    log.warning(
                        "ray: task %d lost an input object (%s); sent again (%d of %d)",
                        i,
                        type(e).__name__,
                        resubmits[i],
                        RESUBMITS,
                    )
                    again = submit(items[i])
                    index[again] = i
                    pending.append(again)
                    continue
                self.placements[node] += 1
                if on_result:
                    on_result(i, results[i])
        return results

    def close(self) -> None:
        """Stop the local runtime (or leave the cluster) if this executor started it."""
        if self._started:
            self._ray.shutdown()
            self._started = False
