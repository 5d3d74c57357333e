"""Generic BigQuery persistence for Django models: client, schema, repository, provisioning."""
