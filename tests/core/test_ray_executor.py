"""The Ray executor on a local runtime: a task whose input object was lost is sent again (at most
``RESUBMITS`` times), a shard's own error is raised at once and never retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="ray is not installed: pip install 'genloom[ray]'")

from genloom.core.executors import ray as ray_executor  # noqa: E402
from tests.conftest import one_ray_at_a_time  # noqa: E402


def _square_logged(item: tuple[str, int]) -> int:
    """Append the item to its log file (one line per run), fail on negatives, else square it."""
    log, x = item
    with open(log, "a") as f:
        f.write(f"{x}\n")
    if x < 0:
        raise ValueError(f"negative {x}")
    return x * x


class _LoseFirst:
    """The ray module, except that ``get`` raises OwnerDiedError for the first ``n`` refs it sees."""

    def __init__(self, ray: Any, n: int) -> None:
        self._ray, self._left = ray, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ray, name)

    def get(self, ref: Any) -> Any:
        if self._left > 0:
            self._left -= 1
            raise self._ray.exceptions.OwnerDiedError(ref.hex(), None, "test")
        return self._ray.get(ref)


@pytest.fixture(scope="module")
def executor() -> Any:
    with one_ray_at_a_time():  # the module's cluster lives across its tests
        ex = ray_executor.RayExecutor(num_cpus=1)
        yield ex
        ex.close()


@pytest.mark.ray
def test_a_lost_input_is_resubmitted_and_a_shard_error_is_not(executor: Any, tmp_path: Path) -> None:
    real = executor._ray
    log = str(tmp_path / "runs.txt")
    try:
        executor._ray = _LoseFirst(real, 1)
        seen: list[int] = []
        out = executor.map(_square_logged, [(log, x) for x in range(4)], lambda i, _r: seen.append(i))
        assert out == [0, 1, 4, 9]
        assert sorted(seen) == [0, 1, 2, 3]  # each result reported once, the resubmitted one too
        assert sum(executor.placements.values()) == 4
        assert len(Path(log).read_text().split()) == 5  # one task ran twice

        # lost more often than RESUBMITS allows: the error reaches the caller
        executor._ray = _LoseFirst(real, ray_executor.RESUBMITS + 1)
        with pytest.raises(real.exceptions.ObjectLostError):
            executor.map(_square_logged, [(log, 7)])

        executor._ray = real
        Path(log).write_text("")
        with pytest.raises(real.exceptions.RayTaskError) as err:
            executor.map(_square_logged, [(log, -1)])
        assert isinstance(err.value.cause, ValueError)
        assert Path(log).read_text().split() == ["-1"]  # the shard's own error: run once, not again
    finally:
        executor._ray = real
