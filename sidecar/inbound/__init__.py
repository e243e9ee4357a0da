"""The inbound side's policy: what a request into the local app must pass (see `policy`)."""
