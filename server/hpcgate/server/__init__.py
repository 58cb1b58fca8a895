"""The hpcgate gRPC server: configuration, auth, SSH pools, adapters and servicers."""
