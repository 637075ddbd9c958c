"""incidentbot: incident command inside Slack."""
