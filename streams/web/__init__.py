"""The worker's web server (Faust's own): the HTTP API, operations endpoints, the status page,
its rolling figures, authentication, and the Prometheus metrics."""
