"""Fleet mode: several bridge instances on one Redis (``BRIDGE_REDIS_URL``). :mod:`bridge.fleet.keys`
holds the layout and the atomic scripts, :mod:`bridge.fleet.fleet` the instance's side of it (its parts:
``scripts``, ``leases``, ``actions``, ``handover``, ``outbox``)."""
