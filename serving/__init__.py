"""The online core, without Kafka: the loaded model (artifacts, encoder, hybrid retriever),
session states, the batched recommendation engine, request answering, the live catalog, A/B
assignment and the content transform of new tracks.

``streams`` wraps it in Faust agents and web views; ``training`` writes the artifacts it reads
and evaluates with the same ranking. It imports only ``schemas``, ``encoders`` and ``index``
(numpy, PyTorch, FAISS): no Kafka, no ``training``, no scipy/LightFM.
"""
