"""The poller while another writer stores fingerprints (a workflow action's push-back, the inbound handlers).

Each test holds one interleaving open deterministically: Kleer is wrapped so that,
right after the poller has read the client list, "another writer" changes Kleer
and stores (or forgets) the record's fingerprint the way the push-back does
(``fingerprints.save`` / ``forget``). The rule under test: a pass records a change
or removal only where the stored fingerprint is still the one it loaded before it
listed Kleer; anything written meanwhile is newer than the list and is left to the
next pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from libs.events.store import PostgresEventStore
from libs.kleer import CLIENT as CLIENT_RESOURCE
from libs.kleer import KleerClient, Resource
from services.outbound import fingerprints
from services.outbound.poller import Poller, PollerConfig, PollReport
from services.outbound.snapshots import record_snapshot
from sim.kleer import KleerSimServer
from tests.integration.outbound.conftest import CONNECTION


class _KleerWithAWriterBetween:
    """The Kleer client, with ``between()`` run once right after the client list is read."""

    def __init__(self, kleer: KleerClient, between: Callable[[], Awaitable[None]]) -> None:
        self._kleer = kleer
        self._between: Callable[[], Awaitable[None]] | None = between

    async def list_all(self, resource: Resource, **kwargs: Any) -> list[dict[str, Any]]:
        records = await self._kleer.list_all(resource, **kwargs)
        if resource == CLIENT_RESOURCE and self._between is not None:
            between, self._between = self._between, None
            await between()
        return records

    async def get(self, resource: Resource, record_id: int) -> dict[str, Any]:
        return await self._kleer.get(resource, record_id)


def _poller(store: PostgresEventStore, kleer: Any) -> Poller:
    return Poller(store.pool, store, kleer, PollerConfig(connection=CONNECTION))


async def _poll_with_a_writer_between(
    store: PostgresEventStore, kleer: KleerClient, between: Callable[[], Awaitable[None]]
) -> PollReport:
    return await _poller(store, _KleerWithAWriterBetween(kleer, between)).poll_once(["client"])


async def _a_synced_client(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer: KleerClient, seed: int
) -> dict[str, Any]:
    """A small book, polled once; its first client."""
    kleer_sim.seed(n_clients=4, seed=seed)
    await _poller(store, kleer).poll_once(["client"])
    return dict(next(iter(kleer_sim.book.clients)))


async def _client_events(store: PostgresEventStore, after: int) -> list[tuple[str, str]]:
    return [
        (e.type, e.data["kleer_id"])
        for e in await store.read_all(after, 100_000)
        if e.type in ("KleerClientChanged", "KleerClientRemoved")
    ]


async def _stored(store: PostgresEventStore, kleer_id: str) -> str | None:
    value = await store.pool.fetchval(
        "SELECT fingerprint FROM outbound_fingerprints WHERE connection = $1 AND kind = 'client' "
        "AND kleer_id = $2",
        CONNECTION,
        kleer_id,
    )
    return str(value) if value is not None else None


async def _push_back(store: PostgresEventStore, record: dict[str, Any]) -> str:
    """What a workflow action's push-back stores after writing ``record`` to Kleer; returns the fingerprint."""
    fingerprint = record_snapshot("client", record).fingerprint
    async with store.pool.acquire() as conn, conn.transaction():
        await fingerprints.save(
            conn,
            CONNECTION,
            "client",
            [fingerprints.FingerprintRow(str(record["id"]), fingerprint, "", None)],
        )
    return fingerprint


async def test_a_record_created_and_fingerprinted_after_the_list_was_read_is_not_taken_as_removed(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    kleer_sim.seed(n_clients=6, seed=81)
    await _poller(store, kleer_client).poll_once(["client"])
    clients = list(kleer_sim.book.clients)
    deleted = clients[0]  # a real deletion in the same pass: still a removal
    kleer_sim.book.clients.remove(deleted["id"])
    created = {**clients[1], "id": max(c["id"] for c in clients) + 1, "name": "Skapad av ett arbetsflöde AB"}

    async def create_and_push_back() -> None:
        kleer_sim.book.clients.insert(created)
        await _push_back(store, created)

    head = await store.head()
    report = await _poll_with_a_writer_between(store, kleer_client, create_and_push_back)

    assert await _client_events(store, head) == [("KleerClientRemoved", str(deleted["id"]))]
    assert report.kinds["client"].removed == 1
    assert await _stored(store, str(created["id"])) == record_snapshot("client", created).fingerprint
    # The next pass lists it: already synced by the push-back, nothing to record.
    head = await store.head()
    await _poller(store, kleer_client).poll_once(["client"])
    assert await _client_events(store, head) == []


async def test_a_fingerprint_written_during_the_pass_is_not_replaced_by_the_older_list(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    client = await _a_synced_client(store, kleer_sim, kleer_client, seed=82)
    kleer_id = str(client["id"])
    listed = {**client, "phone": "08-111 11 11"}  # what the pass will list
    kleer_sim.book.clients.replace(listed)
    newer = {**client, "phone": "08-222 22 22"}  # written by a push-back after the list was read
    pushed: list[str] = []

    async def update_and_push_back() -> None:
        kleer_sim.book.clients.replace(newer)
        pushed.append(await _push_back(store, newer))

    head = await store.head()
    report = await _poll_with_a_writer_between(store, kleer_client, update_and_push_back)

    assert await _client_events(store, head) == [], "the older list's view must not be recorded"
    assert report.kinds["client"].changed == 0
    assert await _stored(store, kleer_id) == pushed[0] != record_snapshot("client", listed).fingerprint
    head = await store.head()
    await _poller(store, kleer_client).poll_once(["client"])
    assert await _client_events(store, head) == []
    assert await _stored(store, kleer_id) == pushed[0]


async def test_a_record_forgotten_during_the_pass_is_not_brought_back_by_the_older_list(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    client = await _a_synced_client(store, kleer_sim, kleer_client, seed=83)
    kleer_id = str(client["id"])
    kleer_sim.book.clients.replace({**client, "phone": "08-333 33 33"})  # the pass lists a change

    async def delete_and_forget() -> None:
        kleer_sim.book.clients.remove(client["id"])
        async with store.pool.acquire() as conn, conn.transaction():
            await fingerprints.forget(conn, CONNECTION, "client", [kleer_id])

    head = await store.head()
    await _poll_with_a_writer_between(store, kleer_client, delete_and_forget)

    assert await _client_events(store, head) == []
    assert await _stored(store, kleer_id) is None


async def test_a_record_deleted_and_recreated_with_the_same_values_during_the_pass_is_not_removed(
    store: PostgresEventStore, kleer_sim: KleerSimServer, kleer_client: KleerClient
) -> None:
    client = await _a_synced_client(store, kleer_sim, kleer_client, seed=84)
    kleer_id = str(client["id"])
    before = await _stored(store, kleer_id)
    kleer_sim.book.clients.remove(client["id"])  # gone when the pass lists Kleer ...

    async def recreate_and_push_back() -> None:  # ... back, unchanged, before the pass records anything
        kleer_sim.book.clients.insert(client)
        await _push_back(store, client)

    head = await store.head()
    await _poll_with_a_writer_between(store, kleer_client, recreate_and_push_back)

    # Written again after the pass loaded it (with the same fingerprint): not a removal.
    assert await _stored(store, kleer_id) == before
    assert await _client_events(store, head) == []
