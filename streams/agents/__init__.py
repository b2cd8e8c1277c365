"""Features beyond the play stream, each with a ``register(worker)``: the live catalog and
its follower, feedback, hot model reload, and the request agents."""
