"""``RedisStore`` on a Redis Cluster of three masters (started by the session on
loopback ports): a write of many streams goes out as a call per hash slot, and a
hub on another "replica" follows streams on every master through the
notifications alone (its sweep is set an hour away, so nothing is found late).
The contract suite runs on the cluster too (tests/streams/test_store_contract.py),
and the nginx tests serve two gateways from it."""

from __future__ import annotations

import re
import shlex
import uuid
from pathlib import Path

import anyio
import pytest
from redis.asyncio.cluster import RedisCluster

from ssegate import Event
from ssegate.streams import DONE, End, Hub, StreamItem
from ssegate.streams.redis import RedisStore
from ssegate.testing._redis import LocalRedisCluster

pytestmark = pytest.mark.redis

README = Path(__file__).parents[2] / "README.md"
STREAMS = 24
EVENTS = 5


@pytest.mark.anyio
async def test_a_hub_follows_streams_on_every_master(redis_cluster_url: str) -> None:
    prefix = f"c{uuid.uuid4().hex[:8]}:"
    names = [f"s{i}" for i in range(STREAMS)]
    async with (
        RedisStore(redis_cluster_url, prefix=prefix) as writer,
        RedisStore(redis_cluster_url, prefix=prefix, poll_interval=3600) as reading,
        Hub(reading) as hub,
    ):
        for name in names:
            await writer.create(name)
        assert writer.cluster
        assert isinstance(writer.redis, RedisCluster)
        masters = {writer.redis.get_node_from_key(writer._keys(s)[0]).name for s in names}
        assert len(masters) == 3  # the streams live on every master
        got: dict[str, list[StreamItem]] = {}

        async def follow(name: str) -> None:
            got[name] = [item async for item in hub.read(name, "")]

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(follow, name)
                # every reader follows before the writes (polled, under fail_after)
                while hub.streams < STREAMS:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                for k in range(EVENTS):
                    # side by side: one group commit carries many streams, split by slot
                    async with anyio.create_task_group() as writes:
                        for name in names:
                            writes.start_soon(writer.append, name, Event(f"{name}-{k}"))
                for name in names:
                    await writer.end(name)
        for name in names:
            epoch = (await writer.info(name)).epoch
            assert got[name] == [
                *[Event(f"{name}-{k}", id=f"{epoch}-{k + 1:012d}") for k in range(EVENTS)],
                End(DONE, f"{epoch}-{EVENTS + 1:012d}"),
            ]


def test_the_readme_commands_are_the_tested_ones() -> None:
    block = next(
        b for b in re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL) if "--cluster" in b
    )
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    cluster = LocalRedisCluster()  # not started: its command lines
    try:
        servers = [line for line in lines if line[0] == "redis-server"]
        assert len(servers) == len(cluster.nodes) == 3
        for line, node in zip(servers, cluster.nodes, strict=True):
            ours = node.command()
            readme_port = line[line.index("--port") + 1]
            line = [str(node.port) if arg == readme_port else arg for arg in line]
            # the README's flags, in pairs, are ours; ours add only where it runs
            assert set(pairs(line[1:])) <= set(pairs(ours[1:]))
            extra = {flag for flag, _ in set(pairs(ours[1:])) - set(pairs(line[1:]))}
            assert extra == {"--bind", "--dir", "--daemonize", "--loglevel"}
        (create,) = [line for line in lines if line[:2] == ["redis-cli", "--cluster"]]
        readme_addresses = [arg for arg in create if arg.startswith("127.0.0.1:")]
        create = [
            cluster.addresses[readme_addresses.index(arg)] if arg in readme_addresses else arg
            for arg in create
        ]
        assert create[1:] == cluster.create_command()[1:]
        serves = [line for line in lines if line[:2] == ["ssegate", "serve"]]
        assert len(serves) == 2
        assert all(line[line.index("--redis-url") + 1] == serves[0][-1] for line in serves)
        assert serves[0][-1].startswith("redis+cluster://")
    finally:
        cluster.close()


def pairs(args: list[str]) -> list[tuple[str, str]]:
    return list(zip(args[::2], args[1::2], strict=True))
