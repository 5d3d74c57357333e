"""The admin portal: Django's admin adapted to tenant data kept in BigQuery."""
