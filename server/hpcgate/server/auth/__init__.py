"""Authentication (bearer JWTs against a JWKS) and authorization per system."""
