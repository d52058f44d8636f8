"""The RabbitMQ consumer's acknowledgements (`kit.bus.rabbitmq._Acks`), against a model
of what the broker does with them.

The broker is the outside edge here: a channel that counts delivery tags from 1 and
keeps the unacknowledged ones, where an ack of a tag it does not hold is a channel error
and a `multiple` ack of tag T acknowledges every one it holds up to T. The integration
suite (`tests/integration/messaging`) runs the same code against the real broker."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from prost.kit.bus.rabbitmq import _Acks


@dataclass(eq=False)
class Channel:
    """A channel as the broker sees it: the tags delivered and not acknowledged."""

    unacked: set[int] = field(default_factory=set)
    is_closed: bool = False
    frames: list[tuple[int, bool]] = field(default_factory=list)  # (tag, multiple) of each ack
    errors: list[str] = field(default_factory=list)
    delivered: int = 0

    def deliver(self) -> Message:
        self.delivered += 1
        self.unacked.add(self.delivered)
        return Message(self, self.delivered)

    def ack(self, tag: int, multiple: bool) -> None:
        self.frames.append((tag, multiple))
        if tag not in self.unacked:
            self.errors.append(f"ack of unknown delivery tag {tag}")
        self.unacked -= {t for t in self.unacked if t <= tag} if multiple else {tag}


@dataclass(eq=False)
class Message:
    channel: Channel
    delivery_tag: int

    async def ack(self, multiple: bool = False) -> None:
        await asyncio.sleep(0)  # a frame goes out through the channel's writer
        self.channel.ack(self.delivery_tag, multiple)

    def settle(self) -> None:
        """A failed message moved to its retry queue and acked on its own (`_settle_failure`)."""
        self.channel.ack(self.delivery_tag, multiple=False)


async def turn() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_messages_handled_in_one_turn_go_as_one_multiple_ack() -> None:
    async def scenario() -> Channel:
        acks, channel = _Acks(), Channel()
        messages = [channel.deliver() for _ in range(30)]
        for m in messages:
            acks.received(m)  # type: ignore[arg-type]
        for m in reversed(messages):
            acks.handled(m)  # type: ignore[arg-type]
        await turn()
        return channel

    channel = asyncio.run(scenario())
    assert channel.frames == [(30, True)]
    assert channel.unacked == set()


def test_a_delivery_still_open_is_never_covered_and_costs_nothing_while_others_pass() -> None:
    """The first delivery's handler never returns: the 10,000 after it are acked one by
    one, and what the consumer keeps about them stays one tag, not ten thousand."""

    async def scenario() -> tuple[Channel, _Acks]:
        acks, channel = _Acks(), Channel()
        stuck = channel.deliver()
        acks.received(stuck)  # type: ignore[arg-type]
        for _ in range(10_000):
            m = channel.deliver()
            acks.received(m)  # type: ignore[arg-type]
            acks.handled(m)  # type: ignore[arg-type]
            await turn()
        return channel, acks

    channel, acks = asyncio.run(scenario())
    assert channel.unacked == {1}
    assert all(not multiple for _, multiple in channel.frames)
    assert channel.errors == []
    kept = acks._channels[channel]  # type: ignore[index]
    assert kept.open == {1}
    assert kept.handled == {}


def test_a_closed_channels_messages_are_not_acked_and_its_tags_are_dropped() -> None:
    async def scenario() -> tuple[Channel, Channel, _Acks]:
        acks, old, new = _Acks(), Channel(), Channel()
        late = old.deliver()
        acks.received(late)  # type: ignore[arg-type]
        old.is_closed = True  # the connection went; the broker gives `late` again on `new`
        again = new.deliver()
        acks.received(again)  # type: ignore[arg-type]
        acks.handled(late)  # type: ignore[arg-type]
        acks.handled(again)  # type: ignore[arg-type]
        await turn()
        return old, new, acks

    old, new, acks = asyncio.run(scenario())
    assert old.frames == []
    assert new.frames == [(1, True)]
    assert list(acks._channels) == [new]  # type: ignore[comparison-overlap]


FATES = st.sampled_from(["handled", "handled", "handled", "settled", "unsent", "hangs"])


@settings(max_examples=300, deadline=None)
@given(
    fates=st.lists(FATES, min_size=1, max_size=40),
    order=st.randoms(use_true_random=False),
    turns=st.lists(st.booleans(), min_size=80, max_size=80),
)
def test_any_interleaving_acks_every_handled_message_and_never_an_open_one(
    fates: list[str], order: random.Random, turns: list[bool]
) -> None:
    """Deliveries start in tag order and end in any order: handled, failed and settled
    (moved and acked on its own), failed with its frame lost (`unsent`: it stays with
    the broker), or never (`hangs`). Whatever the interleaving and however the event
    loop turns between them, no ack names a tag the broker does not hold, no `multiple`
    ack covers an open delivery, and every handled message ends acknowledged."""

    async def scenario() -> Channel:
        acks, channel = _Acks(), Channel()
        messages = [channel.deliver() for _ in fates]
        started: list[int] = []
        ending = list(range(len(fates)))
        order.shuffle(ending)
        steps = iter(turns)
        # Start deliveries in order; end each only after it started (a handler cannot
        # return before it was called).
        while ending:
            if len(started) < len(messages) and (not started or order.random() < 0.5):
                m = messages[len(started)]
                acks.received(m)  # type: ignore[arg-type]
                started.append(m.delivery_tag)
            else:
                ready = [i for i in ending if messages[i].delivery_tag in started]
                if not ready:
                    continue
                i = ready[0]
                ending.remove(i)
                m, fate = messages[i], fates[i]
                if fate == "handled":
                    acks.handled(m)  # type: ignore[arg-type]
                elif fate == "settled":
                    m.settle()
                    acks.settled(m)  # type: ignore[arg-type]
                # "unsent" and "hangs": nothing reaches the broker or the acks
            if next(steps, False):
                await turn()
        await turn()
        return channel

    channel = asyncio.run(scenario())
    assert channel.errors == []
    still_held = {i + 1 for i, fate in enumerate(fates) if fate in ("unsent", "hangs")}
    assert channel.unacked == still_held
