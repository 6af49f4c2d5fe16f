"""Tests of setup/demo."""
