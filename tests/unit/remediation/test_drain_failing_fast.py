"""The stores' queues' outage rule (`drain_failing_fast`): after a batch found the store
unavailable, the batch queued behind it gets the same answer without a call; the one after
that is tried again."""

from __future__ import annotations

from signalgate.remediation.store import StoreUnavailable, drain_failing_fast


async def test_the_batch_behind_an_outage_gets_its_answer_and_the_next_is_tried() -> None:
    queue: list[list[str]] = [["a1", "a2"], ["b1"], ["c1"], ["d1"]]
    down = StoreUnavailable("the store did not answer within its timeout")
    decided: list[list[str]] = []
    failed: list[tuple[list[str], StoreUnavailable]] = []

    def take() -> list[str] | None:
        return queue.pop(0) if queue else None

    async def decide(batch: list[str]) -> StoreUnavailable | None:
        decided.append(batch)
        return down if batch[0] in ("a1", "c1") else None

    await drain_failing_fast(take, decide, lambda batch, why: failed.append((batch, why)))
    # a: the outage (its waiting callers answered), b: behind it, c: tried again, and down
    # again, d: behind that
    assert decided == [["a1", "a2"], ["c1"]]
    assert failed == [(["a1", "a2"], down), (["b1"], down), (["c1"], down), (["d1"], down)]
