"""Business rules: called alike by admin views, API views and management commands."""
