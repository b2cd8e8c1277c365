"""The streaming layer: Faust app, agents, topics, web pages, settings and the CLI."""
