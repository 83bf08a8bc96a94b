"""The CLI's progress reporting of Dask work on the local scheduler."""

from __future__ import annotations

import dask
import dask.array

from eoseg.cli.console import dask_progress


def test_dask_progress_counts_every_task() -> None:
    calls: list[tuple[int, int]] = []
    x = dask.array.ones((40, 40), chunks=10)
    with dask_progress(lambda done, total: calls.append((done, total))):
        total = int((x + 1).sum().compute(scheduler="threads"))
    assert total == 3200
    assert calls, "no progress was reported"
    done, last_total = calls[-1]
    assert done == last_total >= 16  # at least one task per chunk, and all of them done
    assert [c[0] for c in calls] == list(range(1, len(calls) + 1))
