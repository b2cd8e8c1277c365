"""Talking to Kafka outside Faust: connection settings, small aiokafka helpers, and keeping
the client libraries' logs quiet during a broker outage."""
