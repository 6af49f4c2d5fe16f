"""Tests of setup/cli."""
