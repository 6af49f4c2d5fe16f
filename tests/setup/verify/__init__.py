"""Tests of setup/verify."""
