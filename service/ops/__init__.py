"""What the routes do, as keyword-only functions over the store (``service.routes`` stays thin)."""
