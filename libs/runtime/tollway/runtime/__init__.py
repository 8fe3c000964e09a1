"""Runtime adapters shared by the services.

Kafka producer and topics, Postgres pools and migrations, the transactional outbox and the
exactly-once batch consumer.
"""
