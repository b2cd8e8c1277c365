"""The worker: the Faust app and its play-event agent, the micro-batch driver, tables whose
changelog writes can be awaited, committing, gap checks, publishing, and starting a worker
process (:mod:`streams.worker.runner`)."""
