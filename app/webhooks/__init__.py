"""Webhooks (SPEC v2.3): the outbox rows the event log writes with the events
(outbox.py), the addresses a delivery may connect to (addresses.py), Standard Webhooks
signing (signing.py) and the delivery worker of each replica (delivery.py)."""
