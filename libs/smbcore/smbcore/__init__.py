"""SMB 3.x protocol core, server and client (see the issues for what lands here)."""
