"""Operations: the tools an operator uses on the event log.

- ``audit``: one record's timeline across both systems (``timeline`` is the
  pure part: categories, field changes from consecutive snapshots, causation
  chains; ``audit`` does the indexed reads).
- ``deadletters``: the dead-letter queue with its filters and the services'
  redrivers.
- ``replay``: re-drive selected changes through the normal pusher path, with a
  dry run that diffs against what HubSpot holds now.
- ``cli``: ``kleer-sync audit``, ``kleer-sync replay``, ``kleer-sync dlq``.

The admin pages (``services/inbound/admin``) call the same functions.
"""
