"""Wire protocol, ZeroMQ publisher and service, client library and reference viewer."""
