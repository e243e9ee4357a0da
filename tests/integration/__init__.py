"""Integration tests of the HTTP/1.1 data plane: real sockets, real servers, the real sidecar."""
