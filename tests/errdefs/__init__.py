"""Tests of the errdefs package."""
