"""Toy-scale CPU replication of Instruct Identity (issue 7): see run.py and docs/toy-replication.md."""
