"""A faithful HubSpot simulator (see shared/hubspot-api.md), for the demo, tests and benchmarks.

Run it: ``kleer-sync sim hubspot --port 8090 [--rate-limit 110 --time-scale 1 --webhook-url URL ...]``;
in tests use the ``hubspot_sim`` fixture (tests/fixtures/hubspot_sim.py).

HubSpot API served: ``/oauth/v1/token``; ``/crm/v3/objects/{type}`` (list, create, get/patch/delete
by id, ``batch/{read,create,update,upsert,archive}``, ``search``) for companies, deals, products,
line_items, invoices, subscriptions, and projects under ``/crm/objects/v3/projects`` only;
``/crm/v3/properties/{type}`` (+ ``/groups``, ``/batch/{create,read}``, ``/{name}``);
``/crm/v4/objects/{from}/{id}/associations/...`` and ``/crm/v4/associations/{from}/{to}/batch/
{create,read,archive,associate/default}``; ``/automation/v4/actions/{appId}[/{definitionId}]`` and
``/automation/v4/actions/callbacks/[{callbackId}/]complete``.

Admin (no auth), under ``/_sim/``:

==============================================  ==============================================
``GET state[?full=1]``                          record counts, custom properties, limits, webhooks
``GET|DELETE requests``                         request counts per endpoint and status
``POST reset`` / ``POST wipe``                  fresh portal / drop records, keep properties
``GET|POST|DELETE faults``                      ``error_rates``, ``latency``, ``drop_rate``,
                                                ``storm_429``, ``path_prefix``
``GET|POST rate-limit``                         ``max``, ``interval_ms``, ``search_per_s``,
                                                ``daily``, ``time_scale`` (0 turns a limit off)
``GET|POST config``                             ``app_id``, ``portal_id``, ``client_secret``,
                                                ``private_app_token``, ``access_token_lifetime_s``,
                                                ``strict_value_types``, ``shuffle_batch_results``
``GET|POST webhooks``                           ``target_url``, ``signed_url``, ``subscriptions``,
                                                ``batch_size``, ``batch_window_ms``,
                                                ``duplicate_rate``, ``shuffle``, ``max_attempts``,
                                                ``retry_base_ms``, ``timeout_s``, ``concurrency``,
                                                ``signature_version``
``GET webhooks/deliveries``                     attempts, delivered events, stats
``POST ui-edit/{type}/{id}``                    ``{"properties": {...}}`` as a person (CRM_UI)
``POST ui-create/{type}``, ``ui-delete/{type}/{id}``, ``ui-merge/{type}``
``POST workflow-actions/invoke``                signed action call: ``url`` or ``definitionId``,
                                                ``objectType``, ``objectId``, ``properties`` or
                                                ``propertiesToFetch``, ``inputFields``,
                                                ``callbackId``, ``max_attempts``, ``timeout_s``
``GET workflow-actions``                        invocations, completions, definitions
``POST oauth/expire``                           expire every issued OAuth access token
==============================================  ==============================================
"""
