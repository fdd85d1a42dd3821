"""The Ray executor: the same shard function as Ray tasks, on a cluster or a local runtime."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from genloom.core.errors import MissingDependencyError


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
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
            self._started = True

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        ray = self._ray
        remote = ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(items)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                results[i] = ray.get(ref)
                if on_result:
                    on_result(i, results[i])
        return results

    def close(self) -> None:
        """Stop the local runtime if this executor started it."""
        if self._started:
            self._ray.shutdown()
            self._started = False
