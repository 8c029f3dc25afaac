"""The specialist's workbench: the work queue, entry forms, account history, roles, and the JSON API."""
