from __future__ import annotations

import asyncio

import pytest

from app.pg import Event, Member, Subscription, SubscriptionEnded, SubscriptionState

M = Member("a", "i", 1)


def test_push_and_get_in_order() -> None:
    sub = Subscription("s", None, 10)
    assert sub.push("join", "g", (M,))
    assert sub.push("leave", "g", (M,))
    assert len(sub) == 2
    assert sub.get_nowait() == Event(sub, "join", "g", (M,))
    assert sub.drain() == [Event(sub, "leave", "g", (M,))]
    with pytest.raises(asyncio.QueueEmpty):
        sub.get_nowait()


def test_overflow_ends_the_subscription_instead_of_dropping() -> None:
    sub = Subscription("s", "g", 2)
    assert sub.push("join", "g", (M,)) and sub.push("leave", "g", (M,))
    assert not sub.push("join", "g", (M,))
    assert sub.state is SubscriptionState.OVERFLOWED and len(sub) == 0
    with pytest.raises(SubscriptionEnded) as e:
        sub.get_nowait()
    assert e.value.state is SubscriptionState.OVERFLOWED


def test_close_keeps_or_flushes_queued_events() -> None:
    kept = Subscription("s", None, 10)
    kept.push("join", "g", (M,))
    kept.close(flush=False)
    assert kept.state is SubscriptionState.CLOSED
    assert kept.get_nowait().kind == "join"
    with pytest.raises(SubscriptionEnded):
        kept.get_nowait()
    flushed = Subscription("s", None, 10)
    flushed.push("join", "g", (M,))
    flushed.close(flush=True)
    assert len(flushed) == 0


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        Subscription("s", None, 0)


def test_get_waits_for_a_push_and_wakes_on_close() -> None:
    async def scenario() -> None:
        sub = Subscription("s", None, 10)
        waiter = asyncio.create_task(sub.get())
        await asyncio.sleep(0)
        assert not waiter.done()
        sub.push("join", "g", (M,))
        assert (await asyncio.wait_for(waiter, 1)).kind == "join"
        ender = asyncio.create_task(sub.get())
        await asyncio.sleep(0)
        sub.close(flush=False)
        with pytest.raises(SubscriptionEnded):
            await asyncio.wait_for(ender, 1)

    asyncio.run(scenario())


def test_several_waiters_each_get_an_event_and_cancelling_one_is_harmless() -> None:
    async def scenario() -> None:
        sub = Subscription("s", None, 10)
        first, second, gone = (asyncio.create_task(sub.get()) for _ in range(3))
        await asyncio.sleep(0)
        gone.cancel()
        sub.push("join", "g", (M,))
        sub.push("leave", "g", (M,))
        kinds = {e.kind for e in await asyncio.wait_for(asyncio.gather(first, second), 1)}
        assert kinds == {"join", "leave"} and gone.cancelled()

    asyncio.run(scenario())


def test_repr_names_the_target() -> None:
    assert "group 'g'" in repr(Subscription("s", "g", 1))
    assert "scope" in repr(Subscription("s", None, 1))
