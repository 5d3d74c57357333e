"""REST API for integrations (Django REST Framework): thin views over tenants_app.services."""
