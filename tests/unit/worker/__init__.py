"""Tests of the worker core (sync engine), with in-memory fakes for every I/O seam."""
