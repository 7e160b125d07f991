"""A local REDCap-compatible API server for the demo and the tests."""
