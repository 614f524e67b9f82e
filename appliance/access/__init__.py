"""Access: API keys in PostgreSQL, the limits every worker shares, the audit trail."""
