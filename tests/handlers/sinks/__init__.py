"""Tests of handlers/sinks."""
