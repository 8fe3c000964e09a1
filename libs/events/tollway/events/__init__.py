"""Wire contracts shared by every Tollway service: the event envelope, payloads, topics, prices.

Nothing here performs IO; services import these models to speak to each other over Kafka.
"""
