"""gRPC servicers: validate, call one domain function, map the result to messages."""
