"""The outbound flow, Kleer -> HubSpot.

::

    Kleer --poll--> Poller --Kleer{Kind}Changed/Removed--> event log --relay--> outbound.changes
          --> BatchingConsumer(outbound-pusher) --> Pusher --batch upsert + associations--> HubSpot

Modules: ``poller`` (schedule, change detection, events + fingerprints in one
transaction), ``pusher`` (coalesce, skip what HubSpot has, upsert, associate,
DLQ), ``consumer`` (cross-partition batches), ``snapshots`` (what the events
carry), ``planning`` and ``detection`` (pure decisions), ``fingerprints`` and
``idmap`` (tables of migration 003), ``setup`` (``kleer-sync hubspot setup``),
``app`` (wiring), ``cli``, ``redrive`` (DLQ redrivers).

In-process API for workflow actions ("push back at once")::

    from services.outbound.pusher import Pusher, PushResult
    from services.outbound.snapshots import snapshots_for_push

    pusher = Pusher(store, {connection: hubspot_client})          # or Runtime.pusher()
    snapshots = snapshots_for_push("invoice", kleer_invoice, deal_id="123")  # record + its line items
    results: list[PushResult] = await pusher.push_now(
        connection, snapshots, cause=command_event, force=False
    )

``push_now(connection: str, snapshots: Sequence[Snapshot], *, cause: RecordedEvent | None = None,
force: bool = False) -> list[PushResult]`` upserts the snapshots by ``kleer_id``, writes their
associations (to the client's company, the invoice or subscription of line items, and the
deal given as ``deal_id``), and records ``HubSpot{Object}Upserted`` events, the id map and
the own-write log in one transaction. Each ``PushResult`` has ``outcome`` (``created``,
``updated``, ``unchanged``, ``failed``), ``hubspot_id`` and ``error``. Failures are parked
in the DLQ too; HubSpot staying unavailable raises.

DLQ: sources ``outbound-pusher`` and ``outbound-poller``; redrivers in ``redrive``.

Tables (migration 003): ``outbound_fingerprints`` (the poller's last view of each Kleer
record), ``hubspot_ids`` (Kleer id -> HubSpot id, the fingerprint last pushed, parents
already associated), ``pending_associations`` (links waiting for their parent).

Removals: ``OUTBOUND_REMOVAL=flag`` (default) sets ``kleer_deleted=true`` on the HubSpot
record and keeps it (its CRM history stays); ``archive`` archives it. Line items are
always archived (a flagged row would still count in its invoice or subscription).
"""
