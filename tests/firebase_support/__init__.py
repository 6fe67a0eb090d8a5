"""Servers, fixtures and the in-memory Firestore stand-in for the `firebase` tests."""
