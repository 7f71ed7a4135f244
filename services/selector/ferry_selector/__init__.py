"""Ferry selector service: which NIC pairs host A should use to reach host B, and why."""
