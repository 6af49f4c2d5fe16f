"""Tests of handlers/detection."""
