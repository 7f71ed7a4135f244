"""Ferry smbserver: this host's SMB 3 server as a service (configured shares, temporary hidden
migration shares on request over NATS, sessions and channels over HTTP)."""
