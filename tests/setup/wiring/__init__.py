"""Tests of setup/wiring."""
