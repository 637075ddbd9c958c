"""The domain core: incidents, roles, severity, status and timeline. No Slack imports here."""
