"""Benchmarks for Book Market: saga throughput against bare Celery and DBOS, API load. See bench/common.py."""
