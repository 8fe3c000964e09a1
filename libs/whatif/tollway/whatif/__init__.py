"""What-if routing: price a period's logged requests under another route policy or price table.

``policy`` parses and checks the policy document; ``engine`` prices one request both ways
(pure); ``report`` sums the outcomes per catalog model, route, key and project; ``decode``
turns records of the log into typed values; ``source`` reads the period from the log
(gw.requests, gw.usage, router.health) without touching live state; ``cli`` is
``tollway whatif``. The edge serves the same as ``POST /admin/v1/whatif`` and an operator page.
"""
