"""Test doubles and generators shared by the tests (imported as ``support``; not shipped)."""
