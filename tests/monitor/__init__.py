"""Tests of genloom.monitor."""
