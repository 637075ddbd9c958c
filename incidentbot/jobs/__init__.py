"""Work after the ack: a durable queue (the `jobs` table) run by this process's threads."""
