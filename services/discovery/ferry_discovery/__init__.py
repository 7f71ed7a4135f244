"""Ferry discovery service: reads this host's NICs from the kernel and publishes them."""
