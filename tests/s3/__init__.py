"""Real-HTTP S3 test harness: moto's S3 served on loopback, a fault-injecting proxy, and the
pytest fixtures that tie them together (tests/s3/conftest_plugin.py)."""
