"""Delivery: what the worker promises about every input record, and the code that keeps it.

The guarantees (at-least-once, with replays answered identically):

- **Acked only when delivered.** An agent's events are acked, and later committed, only after
  everything its batch sent is in Kafka: answers, dead letters and table changes
  (:mod:`.batches` drives the batches; :mod:`.publisher` sends a batch's records as a few
  Kafka batches; :mod:`.durable_table` makes table changes awaitable, and lets the play path
  send its states with its answers in one produce request). Acks stay in batch order while
  a batch delivers during the next one's computation.
- **Committed after every batch** (:mod:`.commits`): a crash replays about one batch per
  partition, and the committed *floor* tells the engine which answers a session must keep.
- **A replay gets the same bytes.** A replayed play whose state change is in the changelog
  gets its kept first answer; one whose state change was lost is applied again to the older
  state and computes the same answer (answers depend on the play, its session and the model
  only: ``serving.engine``).
- **Bad input never disappears** (:mod:`.dead_letters`): a record that cannot be used goes to
  a dead-letter topic with the reason, the original bytes and where it came from, counted.
- **What stops the process** (:mod:`.stop`, exit status 70, nothing acked or committed): a
  batch that cannot be completed (a delivery or the engine's isolation failed), input offsets
  skipped after a rebalance (:mod:`.gaps`, checked against the group's committed offsets), an
  assigned partition whose stream stopped while records wait (:class:`.gaps.StallWatch`,
  run by ``streams.web.ops``), or the agent's own machinery failing. A restart reads the batch
  again; the worker needs no supervisor for that, only to be started again.
"""
