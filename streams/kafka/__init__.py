"""Talking to Kafka: connection settings, small aiokafka helpers outside Faust, keeping the
client libraries' logs quiet during a broker outage, and our own Faust consumer fetch loop
(:mod:`streams.kafka.fetch_loop`, the one module allowed to use Faust's private attributes)."""
