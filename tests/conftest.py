"""Shared pytest configuration for the NextTrack test suite."""

pytest_plugins = ["tests.kafka_fixture", "tests.data_fixtures"]
